//! Mirroring status per flow and partition: where each partition's checkpoint stands
//! against the source's log end, and why a flow or partition cannot progress.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::{
    Assignment, Checkpoint, FlowPhase, FlowSpec, FlowState, GroupSyncReport, PartitionError,
    PartitionHold,
};
use kmirror_common::{FlowName, PartitionKey};
use kmirror_proto::v1::{FlowStatus, GroupSyncStatus, PartitionStatus};

pub const STATE_RUNNING: &str = "running";
pub const STATE_DEGRADED: &str = "degraded";
pub const STATE_FAILING: &str = "failing";
pub const STATE_PAUSED: &str = "paused";
pub const STATE_COMPLETED: &str = "completed";

/// Records still to mirror in a partition; -1 when the source's offsets are unknown.
///
/// Before the first checkpoint the partition is read from its earliest offset, so
/// everything retained (`high - low`) is still to mirror.
pub fn partition_lag(
    watermarks_opt: Option<(i64, i64)>,
    checkpoint_opt: Option<&Checkpoint>,
) -> i64 {
    let Some((low, high)) = watermarks_opt else {
        return -1;
    };
    let next_offset = match checkpoint_opt {
        Some(checkpoint) => checkpoint.next_offset.max(low),
        None => low,
    };
    (high - next_offset).max(0)
}

/// Records still to mirror in a flow; -1 (unknown) until every partition's lag
/// was measured: before the leader first discovered the flow's topics (no
/// partition to show yet) and while a partition's source offsets are unknown.
/// Never a 0 that was not measured.
pub fn total_lag(flow_state_opt: Option<&FlowState>, partitions: &[PartitionStatus]) -> i64 {
    let discovered = flow_state_opt.is_some_and(|state| state.started_ms.is_some());
    if !discovered || partitions.iter().any(|partition| partition.lag < 0) {
        return -1;
    }
    partitions.iter().map(|partition| partition.lag).sum()
}

/// The flow's state word, from the leader's verdict, the flow's phase and the
/// partitions' errors.
pub fn flow_state(
    flow_error: &str,
    phase: FlowPhase,
    partitions: &[PartitionStatus],
) -> &'static str {
    if !flow_error.is_empty() {
        STATE_FAILING
    } else if phase == FlowPhase::Completed {
        STATE_COMPLETED
    } else if phase == FlowPhase::Paused {
        STATE_PAUSED
    } else if partitions
        .iter()
        .any(|partition| !partition.error.is_empty())
    {
        STATE_DEGRADED
    } else {
        STATE_RUNNING
    }
}

/// The partitions a flow's status shows: every assigned or failing partition, and
/// checkpointed ones of topics the flow still mirrors (a checkpoint outlives a topic
/// that stopped matching, which is not worth a row).
pub fn status_partitions(
    flow: &FlowName,
    flow_state_opt: Option<&FlowState>,
    assignments: &BTreeMap<PartitionKey, Assignment>,
    checkpoints: &BTreeMap<PartitionKey, Checkpoint>,
    errors: &BTreeMap<PartitionKey, PartitionError>,
) -> BTreeSet<PartitionKey> {
    let mirrored_topics: BTreeSet<&str> = flow_state_opt
        .map(|state| state.topics.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let of_flow = |key: &&PartitionKey| &key.flow == flow;
    let mut partitions: BTreeSet<PartitionKey> =
        assignments.keys().filter(of_flow).cloned().collect();
    partitions.extend(errors.keys().filter(of_flow).cloned());
    partitions.extend(
        checkpoints
            .keys()
            .filter(of_flow)
            .filter(|key| mirrored_topics.contains(key.topic.as_str()))
            .cloned(),
    );
    partitions
}

/// One partition's status row.
pub fn partition_status(
    flow: &FlowSpec,
    key: &PartitionKey,
    watermarks_opt: Option<(i64, i64)>,
    assignment_opt: Option<&Assignment>,
    checkpoint_opt: Option<&Checkpoint>,
    error_opt: Option<&PartitionError>,
) -> PartitionStatus {
    PartitionStatus {
        topic: key.topic.clone(),
        partition: key.partition,
        dest_topic: assignment_opt
            .map(|assignment| assignment.dest_topic.clone())
            .unwrap_or_else(|| flow.dest_topic(&key.topic)),
        log_end_offset: watermarks_opt.map(|(_, high)| high).unwrap_or(-1),
        mirrored_offset: checkpoint_opt
            .map(|checkpoint| checkpoint.next_offset)
            .unwrap_or(0),
        lag: partition_lag(watermarks_opt, checkpoint_opt),
        fetcher: assignment_opt
            .map(|assignment| assignment.fetcher.to_string())
            .unwrap_or_default(),
        writer: assignment_opt
            .map(|assignment| assignment.writer.to_string())
            .unwrap_or_default(),
        epoch: assignment_opt
            .map(|assignment| assignment.epoch.0)
            .unwrap_or(0),
        error: error_opt
            .map(|error| error.message.clone())
            .unwrap_or_default(),
        dest_offset: checkpoint_opt
            .map(|checkpoint| checkpoint.dest_offset)
            .unwrap_or(-1),
        target_offset: -1,
        records_per_sec: assignment_opt
            .and(checkpoint_opt)
            .map(|checkpoint| checkpoint.records_per_sec)
            .unwrap_or(0.0),
        bytes_per_sec: assignment_opt
            .and(checkpoint_opt)
            .map(|checkpoint| checkpoint.bytes_per_sec)
            .unwrap_or(0.0),
        checkpoint_ms: checkpoint_opt
            .map(|checkpoint| checkpoint.updated_ms)
            .unwrap_or(0),
        hold: None,
    }
}

/// Marks a row held: the hold, and its words as the partition's error (a held
/// partition cannot progress, so its flow reads degraded).
pub fn mark_held(row: &mut PartitionStatus, hold: &PartitionHold) {
    if row.error.is_empty() {
        row.error = format!("held: {}", hold.message);
    }
    row.hold = Some(hold_message(hold));
}

/// A stored hold as the admin API shows it.
pub fn hold_message(hold: &PartitionHold) -> kmirror_proto::v1::PartitionHold {
    let (lost_from, lost_to) = hold.lost_range().unwrap_or((-1, -1));
    kmirror_proto::v1::PartitionHold {
        reason: hold.reason.as_str().to_string(),
        position: hold.position,
        log_start: hold.log_start,
        log_end: hold.log_end,
        lost_from,
        lost_to,
        message: hold.message.clone(),
        detected_ms: hold.detected_ms,
        detected_by: hold.detected_by.to_string(),
    }
}

/// A flow's status from its partition rows (and, for a migration, its targets
/// and checkpoints).
pub fn flow_status(
    flow: &FlowSpec,
    flow_state_opt: Option<&FlowState>,
    checkpoints: &BTreeMap<PartitionKey, Checkpoint>,
    mut partitions: Vec<PartitionStatus>,
) -> FlowStatus {
    let phase = crate::round::flow_phase(flow, flow_state_opt);
    let error = match phase {
        FlowPhase::Running => flow_state_opt
            .map(|state| state.error.clone())
            .unwrap_or_default(),
        // The last verdict is stale once nothing runs.
        _ => String::new(),
    };
    let total_lag = total_lag(flow_state_opt, &partitions);
    let (target_records, remaining_records) = match flow_state_opt {
        Some(state) if flow.until_caught_up && state.started_ms.is_some() => {
            for partition in &mut partitions {
                if let Some(range) = state
                    .targets
                    .get(&partition.topic)
                    .and_then(|targets| targets.get(&partition.partition))
                {
                    partition.target_offset = range.end;
                }
            }
            let target: i64 = state
                .targets
                .values()
                .flat_map(|targets| targets.values())
                .map(|range| (range.end - range.start).max(0))
                .sum();
            let remaining = crate::round::migration_remaining(&flow.name, &state.targets, |key| {
                checkpoints.get(key)
            });
            (target, remaining)
        }
        _ => (-1, -1),
    };
    let records_per_sec = partitions
        .iter()
        .map(|partition| partition.records_per_sec)
        .sum();
    let bytes_per_sec = partitions
        .iter()
        .map(|partition| partition.bytes_per_sec)
        .sum();
    FlowStatus {
        name: flow.name.to_string(),
        source_cluster: flow.source_cluster.to_string(),
        dest_cluster: flow.dest_cluster.to_string(),
        state: flow_state(&error, phase, &partitions).to_string(),
        error,
        partitions,
        total_lag,
        phase: phase.as_str().to_string(),
        until_caught_up: flow.until_caught_up,
        target_records,
        remaining_records: if phase == FlowPhase::Completed {
            0
        } else {
            remaining_records
        },
        records_per_sec,
        bytes_per_sec,
        completed_ms: flow_state_opt
            .and_then(|state| state.completed_ms)
            .unwrap_or(0),
        ..FlowStatus::default()
    }
}

/// The flow's last consumer-group offset sync, into its status.
pub fn add_group_sync(status: &mut FlowStatus, report_opt: Option<&GroupSyncReport>) {
    let Some(report) = report_opt else {
        return;
    };
    status.group_sync_at_ms = report.at_ms;
    status.group_sync_error = report.error.clone().unwrap_or_default();
    status.group_sync = report
        .groups
        .iter()
        .map(|outcome| GroupSyncStatus {
            group: outcome.group.clone(),
            state: outcome.state.clone(),
            committed: outcome.committed,
            unchanged: outcome.unchanged,
            skipped: outcome.skipped.clone(),
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::{Epoch, MemberId};

    fn checkpoint(next_offset: i64) -> Checkpoint {
        Checkpoint {
            next_offset,
            dest_partition: 0,
            dest_offset: next_offset - 1,
            epoch: Epoch(1),
            updated_ms: 0,
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        }
    }

    fn flow() -> FlowSpec {
        crate::round::test_support::flow_spec("dr")
    }

    #[test]
    fn lag_is_log_end_minus_checkpoint() {
        assert_eq!(partition_lag(Some((0, 100)), Some(&checkpoint(60))), 40);
        assert_eq!(partition_lag(Some((0, 100)), Some(&checkpoint(100))), 0);
    }

    #[test]
    fn lag_without_checkpoint_is_everything_retained() {
        assert_eq!(partition_lag(Some((30, 100)), None), 70);
        assert_eq!(partition_lag(Some((0, 0)), None), 0);
    }

    #[test]
    fn lag_never_counts_records_retention_already_deleted() {
        // The checkpoint fell behind the log start: only what is retained is left.
        assert_eq!(partition_lag(Some((50, 100)), Some(&checkpoint(10))), 50);
    }

    #[test]
    fn lag_is_unknown_without_watermarks() {
        assert_eq!(partition_lag(None, Some(&checkpoint(10))), -1);
    }

    #[test]
    fn lag_is_never_negative() {
        // The source was truncated (recreated) below the checkpoint.
        assert_eq!(partition_lag(Some((0, 5)), Some(&checkpoint(10))), 0);
    }

    #[test]
    fn flow_state_prefers_the_flow_error_then_partition_errors() {
        let healthy = PartitionStatus::default();
        let stuck = PartitionStatus {
            error: "record too large".to_string(),
            ..PartitionStatus::default()
        };
        let running = FlowPhase::Running;
        assert_eq!(
            flow_state("", running, std::slice::from_ref(&healthy)),
            STATE_RUNNING
        );
        assert_eq!(
            flow_state("", running, &[healthy.clone(), stuck]),
            STATE_DEGRADED
        );
        assert_eq!(
            flow_state("", FlowPhase::Paused, std::slice::from_ref(&healthy)),
            STATE_PAUSED
        );
        assert_eq!(
            flow_state("source unreachable", running, &[healthy]),
            STATE_FAILING
        );
    }

    #[test]
    fn total_lag_is_unknown_until_every_partition_was_measured() {
        let key = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
        let known = partition_status(
            &flow(),
            &key,
            Some((0, 10)),
            None,
            Some(&checkpoint(4)),
            None,
        );
        let unknown = partition_status(&flow(), &key, None, None, None, None);
        assert_eq!(unknown.log_end_offset, -1);
        assert_eq!(unknown.lag, -1);
        let started = FlowState {
            started_ms: Some(1),
            ..FlowState::default()
        };
        let status = flow_status(
            &flow(),
            Some(&started),
            &BTreeMap::new(),
            vec![known.clone(), unknown],
        );
        assert_eq!(status.total_lag, -1);
        assert_eq!(status.state, STATE_RUNNING);
        let status = flow_status(&flow(), Some(&started), &BTreeMap::new(), vec![known]);
        assert_eq!(status.total_lag, 6);
    }

    #[test]
    fn a_flow_whose_topics_were_not_discovered_yet_has_no_lag_to_show() {
        // What `status` shows right after `flow create`: no partition yet.
        let status = flow_status(&flow(), None, &BTreeMap::new(), vec![]);
        assert_eq!(status.total_lag, -1);
        let not_started = FlowState::default();
        let status = flow_status(&flow(), Some(&not_started), &BTreeMap::new(), vec![]);
        assert_eq!(status.total_lag, -1);
        // Discovered, and nothing matched: nothing to mirror.
        let started = FlowState {
            started_ms: Some(1),
            ..FlowState::default()
        };
        let status = flow_status(&flow(), Some(&started), &BTreeMap::new(), vec![]);
        assert_eq!(status.total_lag, 0);
    }

    #[test]
    fn a_migration_reports_its_targets_and_what_remains() {
        let mut migration = flow();
        migration.until_caught_up = true;
        let state = FlowState {
            started_ms: Some(1),
            targets: BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([
                    (
                        0,
                        kmirror_common::schema::OffsetRange { start: 0, end: 100 },
                    ),
                    (
                        1,
                        kmirror_common::schema::OffsetRange { start: 10, end: 50 },
                    ),
                ]),
            )]),
            ..FlowState::default()
        };
        let key = |partition| PartitionKey::new(FlowName::new("dr").unwrap(), "orders", partition);
        let checkpoints = BTreeMap::from([(key(0), checkpoint(60))]);
        let rows = vec![
            partition_status(
                &migration,
                &key(0),
                Some((0, 120)),
                None,
                checkpoints.get(&key(0)),
                None,
            ),
            partition_status(&migration, &key(1), Some((0, 50)), None, None, None),
        ];
        let status = flow_status(&migration, Some(&state), &checkpoints, rows);
        assert_eq!(status.target_records, 140);
        // Partition 0: 40 left; partition 1 has no checkpoint: 40 from its start.
        assert_eq!(status.remaining_records, 80);
        assert_eq!(status.partitions[0].target_offset, 100);
        assert_eq!(status.state, STATE_RUNNING);

        let done = FlowState {
            completed_ms: Some(2),
            ..state
        };
        let status = flow_status(&migration, Some(&done), &checkpoints, vec![]);
        assert_eq!(status.state, STATE_COMPLETED);
        assert_eq!(status.remaining_records, 0);
    }

    #[test]
    fn status_rows_skip_checkpoints_of_topics_no_longer_mirrored() {
        let flow_name = FlowName::new("dr").unwrap();
        let other_flow = FlowName::new("other").unwrap();
        let assignment = Assignment {
            fetcher: MemberId::new("f1").unwrap(),
            writer: MemberId::new("w1").unwrap(),
            epoch: Epoch(3),
            dest_topic: "orders".to_string(),
            dest_partitions: 1,
            source_partitions: 1,
            releasing_since_ms: None,
        };
        let assignments = BTreeMap::from([
            (
                PartitionKey::new(flow_name.clone(), "orders", 0),
                assignment.clone(),
            ),
            (
                PartitionKey::new(other_flow.clone(), "orders", 0),
                assignment,
            ),
        ]);
        let checkpoints = BTreeMap::from([
            (
                PartitionKey::new(flow_name.clone(), "orders", 1),
                checkpoint(5),
            ),
            (
                PartitionKey::new(flow_name.clone(), "retired", 0),
                checkpoint(5),
            ),
        ]);
        let state = FlowState {
            error: String::new(),
            topics: vec!["orders".to_string()],
            updated_ms: 0,
            ..FlowState::default()
        };
        let rows = status_partitions(
            &flow_name,
            Some(&state),
            &assignments,
            &checkpoints,
            &BTreeMap::new(),
        );
        let rows: Vec<String> = rows.iter().map(|key| key.to_string()).collect();
        assert_eq!(rows, vec!["dr:orders/0", "dr:orders/1"]);
    }
}
