//! A flow's life cycle, pure: its phase, its start (the start position of every
//! partition without a checkpoint, and a migration's captured targets), and a
//! migration's completion.

use std::collections::BTreeMap;

use kmirror_common::schema::{
    Checkpoint, FlowPhase, FlowSpec, FlowState, OffsetRange, StartPosition,
};
use kmirror_common::{Epoch, FlowName, PartitionKey};
use tracing::info;

use crate::round::FlowDiscovery;

/// What a flow does now: a migration that reached its targets stays completed,
/// a paused flow waits, anything else runs.
pub fn flow_phase(flow: &FlowSpec, state_opt: Option<&FlowState>) -> FlowPhase {
    let completed =
        flow.until_caught_up && state_opt.is_some_and(|state| state.completed_ms.is_some());
    if completed {
        FlowPhase::Completed
    } else if flow.paused {
        FlowPhase::Paused
    } else {
        FlowPhase::Running
    }
}

/// Records a migration still has to copy: per captured partition, from its
/// checkpoint (or the captured start) up to the captured end.
pub fn migration_remaining<'a>(
    flow: &FlowName,
    targets: &BTreeMap<String, BTreeMap<i32, OffsetRange>>,
    checkpoint_of: impl Fn(&PartitionKey) -> Option<&'a Checkpoint>,
) -> i64 {
    let mut remaining = 0;
    for (topic, partitions) in targets {
        for (&partition, range) in partitions {
            let key = PartitionKey::new(flow.clone(), topic.clone(), partition);
            let position = checkpoint_of(&key)
                .map(|checkpoint| checkpoint.next_offset)
                .unwrap_or(range.start)
                .max(range.start);
            remaining += (range.end - position).max(0);
        }
    }
    remaining
}

/// Whether starting the flow needs the source offsets: not when every partition
/// starts at the earliest offset (the fetchers' default) and nothing is captured.
pub fn start_needs_offsets(flow: &FlowSpec) -> bool {
    flow.start != StartPosition::Earliest || flow.until_caught_up
}

/// Every partition of the topics a flow matched, in order.
pub fn matched_partitions(discovery: &FlowDiscovery) -> Vec<(String, i32)> {
    discovery
        .matched
        .iter()
        .flat_map(|(topic, &count)| (0..count).map(move |partition| (topic.clone(), partition)))
        .collect()
}

/// The source offsets a flow starts from, as read from its source cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOffsets {
    /// (topic, partition), in the order of the other fields.
    pub partitions: Vec<(String, i32)>,
    /// (low, high) watermarks.
    pub bounds: Vec<(i64, i64)>,
    /// For a timestamp start: the first offset at or after the timestamp, -1
    /// where there is none.
    pub at_timestamp_opt: Option<Vec<i64>>,
}

/// The watermarks of every partition, or why the flow cannot start: all of them
/// are needed.
pub fn start_bounds(
    flow: &FlowSpec,
    partitions: &[(String, i32)],
    watermarks: Vec<Option<(i64, i64)>>,
) -> Result<Vec<(i64, i64)>, String> {
    partitions
        .iter()
        .zip(watermarks)
        .map(|((topic, partition), watermarks_opt)| {
            watermarks_opt.ok_or_else(|| {
                format!(
                    "cannot start: the offsets of source partition {topic}/{partition} cannot be read from cluster {}",
                    flow.source_cluster
                )
            })
        })
        .collect()
}

/// What starting a flow writes: initial checkpoints (start position) and the
/// migration targets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowStart {
    pub checkpoints: Vec<(PartitionKey, Checkpoint)>,
    pub targets: BTreeMap<String, BTreeMap<i32, OffsetRange>>,
}

/// Applies a new flow's start position to its partitions without a checkpoint
/// and captures the end offsets a migration copies up to. `offsets_opt` is `None`
/// when the flow needs none (see [`start_needs_offsets`]).
pub fn flow_start(
    flow: &FlowSpec,
    offsets_opt: Option<&SourceOffsets>,
    checkpoints: &BTreeMap<PartitionKey, Checkpoint>,
    epoch: Epoch,
    now_ms: i64,
) -> FlowStart {
    let mut start = FlowStart::default();
    let Some(offsets) = offsets_opt else {
        return start;
    };
    for (index, ((topic, partition), &(low, high))) in
        offsets.partitions.iter().zip(&offsets.bounds).enumerate()
    {
        let start_offset = match (flow.start, &offsets.at_timestamp_opt) {
            (StartPosition::Timestamp { .. }, Some(at_timestamp)) => {
                match at_timestamp.get(index) {
                    // No record at or after the timestamp: start at the end.
                    Some(&offset) if offset >= 0 => offset.clamp(low, high),
                    _ => high,
                }
            }
            (StartPosition::Latest, _) | (StartPosition::Timestamp { .. }, None) => high,
            (StartPosition::Earliest, _) => low,
        };
        let key = PartitionKey::new(flow.name.clone(), topic.clone(), *partition);
        let existing_opt = checkpoints.get(&key);
        if existing_opt.is_none() && flow.start != StartPosition::Earliest {
            start.checkpoints.push((
                key.clone(),
                Checkpoint {
                    next_offset: start_offset,
                    dest_partition: -1,
                    dest_offset: -1,
                    epoch,
                    updated_ms: now_ms,
                    records_per_sec: 0.0,
                    bytes_per_sec: 0.0,
                },
            ));
        }
        if flow.until_caught_up {
            let from = existing_opt
                .map(|checkpoint| checkpoint.next_offset)
                .unwrap_or(start_offset)
                .max(low);
            start.targets.entry(topic.clone()).or_default().insert(
                *partition,
                OffsetRange {
                    start: from.min(high),
                    end: high,
                },
            );
        }
    }
    start
}

/// The states of the running flows after their start and their migration, and
/// the start positions to write.
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    pub states: BTreeMap<FlowName, FlowState>,
    /// Start positions, in the order they are written.
    pub initial_checkpoints: Vec<(PartitionKey, Checkpoint)>,
}

/// Starts the running flows seen for the first time (`starts`: how reading their
/// start offsets went) and completes the migrations that reached their targets;
/// narrows each flow's wanted partitions to what may run.
pub fn decide_lifecycle(
    running: &[&FlowSpec],
    previous_states: &BTreeMap<FlowName, FlowState>,
    discovered: &mut BTreeMap<FlowName, FlowDiscovery>,
    starts: BTreeMap<FlowName, Result<FlowStart, String>>,
    checkpoints: &BTreeMap<PartitionKey, Checkpoint>,
    now_ms: i64,
) -> Lifecycle {
    let mut lifecycle = Lifecycle::default();
    for flow in running {
        let mut state = previous_states.get(&flow.name).cloned().unwrap_or_default();
        state.phase = FlowPhase::Running;
        lifecycle.states.insert(flow.name.clone(), state);
    }
    let mut initial_checkpoints: BTreeMap<PartitionKey, Checkpoint> = BTreeMap::new();
    for (flow_name, start) in starts {
        let Some(flow) = running.iter().find(|flow| flow.name == flow_name) else {
            continue;
        };
        let discovery = discovered.get_mut(&flow.name).expect("discovered");
        let state = lifecycle.states.get_mut(&flow.name).expect("state");
        match start {
            Ok(start) => {
                info!(
                    flow = %flow.name,
                    start = ?flow.start,
                    until_caught_up = flow.until_caught_up,
                    positioned = start.checkpoints.len(),
                    "flow started"
                );
                for (key, checkpoint) in start.checkpoints {
                    lifecycle
                        .initial_checkpoints
                        .push((key.clone(), checkpoint));
                    initial_checkpoints.insert(key, checkpoint);
                }
                state.started_ms = Some(now_ms);
                state.targets = start.targets;
                // A flow started again (`kmirror mirror --until-caught-up` run
                // once more) keeps the configs it last copied, so that source
                // changes made meanwhile are still carried over.
                if state.source_configs.is_empty() {
                    state.source_configs = discovery.source_configs.clone();
                }
            }
            Err(cause) => {
                // Nothing of the flow may run before its start positions are
                // written: the fetchers would read from the earliest offset.
                discovery.errors.push(cause);
                discovery.partitions.clear();
            }
        }
    }

    // Migrations: only the captured partitions, and done once all reached
    // their end offsets.
    for flow in running.iter().filter(|flow| flow.until_caught_up) {
        let state = lifecycle.states.get_mut(&flow.name).expect("state");
        let Some(discovery) = discovered.get_mut(&flow.name) else {
            continue;
        };
        if state.started_ms.is_none() {
            discovery.partitions.clear();
            continue;
        }
        let checkpoint_of = |key: &PartitionKey| {
            initial_checkpoints
                .get(key)
                .or_else(|| checkpoints.get(key))
        };
        // Every captured partition keeps its assignment until the whole
        // migration is done: unassigning the ones that finished first would
        // leave the plan uneven, and evening it out would move (and resend)
        // partitions still copying.
        discovery.partitions.retain(|partition| {
            state
                .targets
                .get(&partition.key.topic)
                .is_some_and(|targets| targets.contains_key(&partition.key.partition))
        });
        if migration_remaining(&flow.name, &state.targets, checkpoint_of) == 0 {
            info!(flow = %flow.name, "migration complete: every partition reached its target");
            state.phase = FlowPhase::Completed;
            state.completed_ms = Some(now_ms);
            discovery.partitions.clear();
        }
    }
    lifecycle
}

/// The running flows to start this round: never started, and their topics are
/// known this round.
pub fn flows_to_start<'a>(
    running: &[&'a FlowSpec],
    previous_states: &BTreeMap<FlowName, FlowState>,
    discovered: &BTreeMap<FlowName, FlowDiscovery>,
) -> Vec<&'a FlowSpec> {
    running
        .iter()
        .copied()
        .filter(|flow| {
            previous_states
                .get(&flow.name)
                .is_none_or(|state| state.started_ms.is_none())
                && discovered
                    .get(&flow.name)
                    .is_some_and(|discovery| discovery.source_listed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::{checkpoint, flow_spec, key};
    use crate::round::topics::carried;

    fn offsets(bounds: &[(i64, i64)]) -> SourceOffsets {
        SourceOffsets {
            partitions: (0..bounds.len() as i32)
                .map(|partition| ("orders".to_string(), partition))
                .collect(),
            bounds: bounds.to_vec(),
            at_timestamp_opt: None,
        }
    }

    #[test]
    fn a_new_flow_with_latest_start_positions_every_partition_at_its_high_watermark() {
        let flow = FlowSpec {
            start: StartPosition::Latest,
            ..flow_spec("dr")
        };
        let start = flow_start(
            &flow,
            Some(&offsets(&[(0, 10), (5, 7)])),
            &BTreeMap::new(),
            Epoch(9),
            100,
        );
        let positions: Vec<(PartitionKey, i64, Epoch)> = start
            .checkpoints
            .iter()
            .map(|(key, checkpoint)| (key.clone(), checkpoint.next_offset, checkpoint.epoch))
            .collect();
        assert_eq!(
            positions,
            vec![
                (key("dr", "orders", 0), 10, Epoch(9)),
                (key("dr", "orders", 1), 7, Epoch(9))
            ]
        );
        assert!(start.targets.is_empty());
    }

    #[test]
    fn a_new_flow_from_the_earliest_offset_needs_no_offsets_and_writes_no_positions() {
        let flow = flow_spec("dr");
        assert!(!start_needs_offsets(&flow));
        assert_eq!(
            flow_start(&flow, None, &BTreeMap::new(), Epoch(1), 0),
            FlowStart::default()
        );
    }

    #[test]
    fn a_timestamp_start_stays_within_the_watermarks_and_starts_at_the_end_without_a_later_record()
    {
        let flow = FlowSpec {
            start: StartPosition::Timestamp { ms: 1_000 },
            ..flow_spec("dr")
        };
        let source = SourceOffsets {
            at_timestamp_opt: Some(vec![2, 50, -1]),
            ..offsets(&[(4, 10), (0, 20), (0, 30)])
        };
        let start = flow_start(&flow, Some(&source), &BTreeMap::new(), Epoch(1), 0);
        let next: Vec<i64> = start
            .checkpoints
            .iter()
            .map(|(_, checkpoint)| checkpoint.next_offset)
            .collect();
        assert_eq!(next, vec![4, 20, 30]);
    }

    #[test]
    fn a_partition_with_a_checkpoint_keeps_it_when_the_flow_starts() {
        let flow = FlowSpec {
            start: StartPosition::Latest,
            ..flow_spec("dr")
        };
        let checkpoints = BTreeMap::from([(key("dr", "orders", 0), checkpoint(3))]);
        let start = flow_start(
            &flow,
            Some(&offsets(&[(0, 10), (0, 10)])),
            &checkpoints,
            Epoch(1),
            0,
        );
        assert_eq!(start.checkpoints.len(), 1);
        assert_eq!(start.checkpoints[0].0, key("dr", "orders", 1));
    }

    #[test]
    fn a_migration_captures_each_partition_from_its_checkpoint_up_to_its_high_watermark() {
        let flow = FlowSpec {
            until_caught_up: true,
            ..flow_spec("dr")
        };
        assert!(start_needs_offsets(&flow));
        let checkpoints = BTreeMap::from([(key("dr", "orders", 1), checkpoint(8))]);
        let start = flow_start(
            &flow,
            Some(&offsets(&[(2, 10), (0, 10)])),
            &checkpoints,
            Epoch(1),
            0,
        );
        assert!(start.checkpoints.is_empty(), "earliest writes no positions");
        assert_eq!(
            start.targets["orders"],
            BTreeMap::from([
                (0, OffsetRange { start: 2, end: 10 }),
                (1, OffsetRange { start: 8, end: 10 }),
            ])
        );
    }

    #[test]
    fn a_partition_whose_watermarks_cannot_be_read_stops_the_start() {
        let flow = flow_spec("dr");
        let partitions = vec![("orders".to_string(), 0), ("orders".to_string(), 1)];
        let error = start_bounds(&flow, &partitions, vec![Some((0, 1)), None]).unwrap_err();
        assert_eq!(
            error,
            "cannot start: the offsets of source partition orders/1 cannot be read from cluster src"
        );
    }

    fn migrating_flow() -> (FlowSpec, FlowState, FlowDiscovery) {
        let flow = FlowSpec {
            until_caught_up: true,
            ..flow_spec("dr")
        };
        let state = FlowState {
            started_ms: Some(1),
            targets: BTreeMap::from([(
                "orders".to_string(),
                BTreeMap::from([
                    (0, OffsetRange { start: 0, end: 10 }),
                    (1, OffsetRange { start: 0, end: 5 }),
                ]),
            )]),
            ..FlowState::default()
        };
        let discovery = FlowDiscovery {
            source_listed: true,
            partitions: (0..3)
                .map(|partition| {
                    carried(
                        &key("dr", "orders", partition),
                        &crate::round::test_support::assignment(),
                    )
                })
                .collect(),
            ..FlowDiscovery::default()
        };
        (flow, state, discovery)
    }

    #[test]
    fn a_migration_completes_once_every_captured_partition_reached_its_target() {
        let (flow, state, discovery) = migrating_flow();
        let states = BTreeMap::from([(flow.name.clone(), state)]);
        let mut discovered = BTreeMap::from([(flow.name.clone(), discovery)]);
        let checkpoints = BTreeMap::from([
            (key("dr", "orders", 0), checkpoint(10)),
            (key("dr", "orders", 1), checkpoint(5)),
        ]);
        let lifecycle = decide_lifecycle(
            &[&flow],
            &states,
            &mut discovered,
            BTreeMap::new(),
            &checkpoints,
            77,
        );
        let state = &lifecycle.states[&flow.name];
        assert_eq!(state.phase, FlowPhase::Completed);
        assert_eq!(state.completed_ms, Some(77));
        assert!(discovered[&flow.name].partitions.is_empty());
    }

    #[test]
    fn a_migration_keeps_every_captured_partition_and_only_those_until_all_are_done() {
        let (flow, state, discovery) = migrating_flow();
        let states = BTreeMap::from([(flow.name.clone(), state)]);
        let mut discovered = BTreeMap::from([(flow.name.clone(), discovery)]);
        // Partition 1 is done, partition 0 is not; partition 2 appeared later.
        let checkpoints = BTreeMap::from([
            (key("dr", "orders", 0), checkpoint(9)),
            (key("dr", "orders", 1), checkpoint(5)),
        ]);
        let lifecycle = decide_lifecycle(
            &[&flow],
            &states,
            &mut discovered,
            BTreeMap::new(),
            &checkpoints,
            77,
        );
        assert_eq!(lifecycle.states[&flow.name].phase, FlowPhase::Running);
        let kept: Vec<&PartitionKey> = discovered[&flow.name]
            .partitions
            .iter()
            .map(|partition| &partition.key)
            .collect();
        assert_eq!(kept, vec![&key("dr", "orders", 0), &key("dr", "orders", 1)]);
    }

    #[test]
    fn a_flow_whose_start_offsets_cannot_be_read_runs_nothing_and_says_why() {
        let flow = FlowSpec {
            start: StartPosition::Latest,
            ..flow_spec("dr")
        };
        let (_, _, discovery) = migrating_flow();
        let mut discovered = BTreeMap::from([(flow.name.clone(), discovery)]);
        let starts = BTreeMap::from([(flow.name.clone(), Err("cannot start: no".to_string()))]);
        let lifecycle = decide_lifecycle(
            &[&flow],
            &BTreeMap::new(),
            &mut discovered,
            starts,
            &BTreeMap::new(),
            5,
        );
        assert_eq!(lifecycle.states[&flow.name].started_ms, None);
        assert!(discovered[&flow.name].partitions.is_empty());
        assert_eq!(discovered[&flow.name].errors, vec!["cannot start: no"]);
    }

    #[test]
    fn a_started_flow_records_its_start_and_its_positions_are_written_once() {
        let flow = FlowSpec {
            start: StartPosition::Latest,
            ..flow_spec("dr")
        };
        let mut discovered = BTreeMap::from([(
            flow.name.clone(),
            FlowDiscovery {
                source_listed: true,
                source_configs: BTreeMap::from([("orders".to_string(), BTreeMap::new())]),
                ..FlowDiscovery::default()
            },
        )]);
        assert_eq!(
            flows_to_start(&[&flow], &BTreeMap::new(), &discovered).len(),
            1
        );
        let start = flow_start(
            &flow,
            Some(&offsets(&[(0, 4)])),
            &BTreeMap::new(),
            Epoch(1),
            5,
        );
        let starts = BTreeMap::from([(flow.name.clone(), Ok(start))]);
        let lifecycle = decide_lifecycle(
            &[&flow],
            &BTreeMap::new(),
            &mut discovered,
            starts,
            &BTreeMap::new(),
            5,
        );
        let state = &lifecycle.states[&flow.name];
        assert_eq!(state.started_ms, Some(5));
        assert_eq!(state.source_configs.len(), 1);
        assert_eq!(lifecycle.initial_checkpoints.len(), 1);
        let states = lifecycle.states;
        assert!(flows_to_start(&[&flow], &states, &discovered).is_empty());
    }

    #[test]
    fn a_restarted_migration_keeps_the_configs_it_last_copied() {
        let flow = FlowSpec {
            until_caught_up: true,
            ..flow_spec("dr")
        };
        let last_copied = BTreeMap::from([(
            "orders".to_string(),
            crate::round::test_support::configs(&[("retention.ms", "1")]),
        )]);
        let previous = BTreeMap::from([(
            flow.name.clone(),
            FlowState {
                source_configs: last_copied.clone(),
                ..FlowState::default()
            },
        )]);
        let mut discovered = BTreeMap::from([(
            flow.name.clone(),
            FlowDiscovery {
                source_listed: true,
                source_configs: BTreeMap::from([(
                    "orders".to_string(),
                    crate::round::test_support::configs(&[("retention.ms", "2")]),
                )]),
                ..FlowDiscovery::default()
            },
        )]);
        let starts = BTreeMap::from([(flow.name.clone(), Ok(FlowStart::default()))]);
        let lifecycle = decide_lifecycle(
            &[&flow],
            &previous,
            &mut discovered,
            starts,
            &BTreeMap::new(),
            5,
        );
        assert_eq!(lifecycle.states[&flow.name].source_configs, last_copied);
    }

    #[test]
    fn a_completed_migration_stays_completed_and_a_paused_flow_waits() {
        let migration = FlowSpec {
            until_caught_up: true,
            paused: true,
            ..flow_spec("dr")
        };
        let completed = FlowState {
            completed_ms: Some(1),
            ..FlowState::default()
        };
        assert_eq!(
            flow_phase(&migration, Some(&completed)),
            FlowPhase::Completed
        );
        assert_eq!(flow_phase(&migration, None), FlowPhase::Paused);
        let mirror = flow_spec("dr");
        assert_eq!(flow_phase(&mirror, Some(&completed)), FlowPhase::Running);
    }
}
