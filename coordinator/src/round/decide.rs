//! The round's decision, pure: from the snapshot, what was discovered and the
//! flows' new states, the assignments to write (planned, released, deleted), the
//! flows and drain marks to clean up and the flow states to record.

use std::collections::BTreeMap;

use kmirror_common::schema::{Assignment, Checkpoint, FlowState};
use kmirror_common::{FlowName, MemberId, PartitionKey, Role};
use tracing::{debug, info, warn};

use crate::planner::{plan, Problem};
use crate::round::lifecycle::flow_phase;
use crate::round::planning::{
    deleted_flows, plannable, previous_assignments, release_steps, unassignable_reason,
    PlanningMode, ReleaseReason, ReleaseStep,
};
use crate::round::{FlowDiscovery, RoundSummary};
use crate::store::Snapshot;

/// What a round decided besides the flows' start and config sync.
#[derive(Debug, Clone, Default)]
pub struct RoundInput {
    pub discovered: BTreeMap<FlowName, FlowDiscovery>,
    /// The running flows' states after their start and migration.
    pub running_states: BTreeMap<FlowName, FlowState>,
    /// Start positions to write.
    pub initial_checkpoints: Vec<(PartitionKey, Checkpoint)>,
    /// Within the leader's member grace (see [`crate::reconcile::Reconciler`]).
    pub in_grace: bool,
    pub now_ms: i64,
}

/// One assignment write.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignmentWrite {
    Put(PartitionKey, Assignment),
    Delete(PartitionKey),
}

/// Everything a round writes, in the order it is written.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub initial_checkpoints: Vec<(PartitionKey, Checkpoint)>,
    /// The operator's rebalance request was served.
    pub rebalance_served: bool,
    pub assignments: Vec<AssignmentWrite>,
    /// Flows whose leftovers go.
    pub deleted_flows: Vec<FlowName>,
    /// Drain marks of drained members that left the fleet.
    pub departed_drains: Vec<(Role, MemberId)>,
    /// Flow states that changed.
    pub flow_states: Vec<(FlowName, FlowState)>,
    pub summary: RoundSummary,
}

/// Plans the wanted partitions and decides the round's writes.
pub fn decide_round(snapshot: &Snapshot, input: RoundInput) -> Decision {
    let RoundInput {
        mut discovered,
        running_states,
        initial_checkpoints,
        in_grace,
        now_ms,
    } = input;
    let mut summary = RoundSummary {
        flows: snapshot.flows.len(),
        created_topics: discovered
            .values()
            .flat_map(|discovery| discovery.created_topics.iter().cloned())
            .collect(),
        ..RoundSummary::default()
    };
    let rebalance = snapshot.rebalance_opt.is_some();
    let partitions = plannable(
        snapshot,
        discovered
            .values()
            .flat_map(|discovery| discovery.partitions.iter().cloned()),
    );
    let problem = Problem::from_snapshot(
        snapshot,
        partitions,
        PlanningMode {
            rebalance,
            assigned_members_live: in_grace,
        },
        now_ms,
    );
    summary.partitions = problem.partitions.len();
    let previous = previous_assignments(snapshot);
    let outcome = plan(&problem, &previous);
    summary.changed = outcome.changed.len();
    summary.removed = outcome.removed.len();
    if rebalance {
        let moves = outcome.moves(&previous);
        info!(
            moves = moves.len(),
            "rebalanced running partitions on request"
        );
    }

    let mut unassigned_by_flow: BTreeMap<&FlowName, usize> = BTreeMap::new();
    for key in &outcome.unassigned {
        *unassigned_by_flow.entry(&key.flow).or_insert(0) += 1;
    }
    for (flow, count) in unassigned_by_flow {
        if let Some(discovery) = discovered.get_mut(flow) {
            discovery.errors.push(unassignable_reason(&problem, count));
        }
    }

    let mut assignments: Vec<AssignmentWrite> = outcome
        .changed
        .iter()
        .map(|key| AssignmentWrite::Put(key.clone(), outcome.assignments[key].clone()))
        .collect();
    let fetcher_registered =
        |id: &MemberId| snapshot.members.contains_key(&(Role::Fetcher, id.clone()));
    for step in release_steps(
        &snapshot.assignments,
        &outcome.removed,
        fetcher_registered,
        now_ms,
    ) {
        match step {
            ReleaseStep::Release(key, assignment) => {
                debug!(partition = %key, fetcher = %assignment.fetcher, "asking the fetcher to release the partition");
                assignments.push(AssignmentWrite::Put(key, assignment));
            }
            ReleaseStep::Delete(key, reason) => {
                if let ReleaseReason::TimedOut = reason {
                    warn!(partition = %key, "the fetcher did not release the partition in time; unassigning it");
                }
                assignments.push(AssignmentWrite::Delete(key));
            }
        }
    }
    let deleted: Vec<FlowName> = deleted_flows(snapshot).into_iter().collect();
    summary.deleted_flows = deleted.clone();
    Decision {
        initial_checkpoints,
        rebalance_served: rebalance,
        assignments,
        deleted_flows: deleted,
        departed_drains: departed_drains(snapshot, in_grace),
        flow_states: flow_state_updates(snapshot, running_states, &discovered, now_ms),
        summary,
    }
}

/// Drain marks whose member left. A drain mark outlives its member only while
/// the member may come back under the same id within the grace.
pub fn departed_drains(snapshot: &Snapshot, in_grace: bool) -> Vec<(Role, MemberId)> {
    if in_grace {
        return Vec::new();
    }
    snapshot
        .drained
        .iter()
        .filter(|(role, id)| !snapshot.members.contains_key(&(*role, id.clone())))
        .inspect(|(role, id)| info!(member = %id, %role, "drained member left the fleet"))
        .cloned()
        .collect()
}

/// Each flow's state as this round leaves it, where it differs from the stored
/// one (the time of the round aside).
pub fn flow_state_updates(
    snapshot: &Snapshot,
    mut running_states: BTreeMap<FlowName, FlowState>,
    discovered: &BTreeMap<FlowName, FlowDiscovery>,
    now_ms: i64,
) -> Vec<(FlowName, FlowState)> {
    let mut updates = Vec::new();
    for flow in snapshot.flows.values() {
        let previous_state_opt = snapshot.flow_states.get(&flow.name);
        let mut state = match running_states.remove(&flow.name) {
            Some(state) => state,
            None => {
                // Paused or completed.
                let mut state = previous_state_opt.cloned().unwrap_or_default();
                state.phase = flow_phase(flow, previous_state_opt);
                state.error = String::new();
                state
            }
        };
        if let Some(discovery) = discovered.get(&flow.name) {
            state.error = discovery.errors.join("; ");
            state.topics = discovery.topics.clone();
        }
        state.updated_ms = now_ms;
        let unchanged = previous_state_opt.is_some_and(|previous| {
            FlowState {
                updated_ms: 0,
                ..previous.clone()
            } == FlowState {
                updated_ms: 0,
                ..state.clone()
            }
        });
        if unchanged {
            continue;
        }
        let previous_error = previous_state_opt
            .map(|previous| previous.error.as_str())
            .unwrap_or("");
        let previous_phase = previous_state_opt
            .map(|previous| previous.phase)
            .unwrap_or_default();
        if state.phase != previous_phase {
            info!(flow = %flow.name, phase = state.phase.as_str(), "flow phase changed");
        }
        if state.error.is_empty() && !previous_error.is_empty() {
            info!(flow = %flow.name, "flow recovered");
        } else if !state.error.is_empty() && state.error != previous_error {
            warn!(flow = %flow.name, error = %state.error, "flow cannot run");
        }
        updates.push((flow.name.clone(), state));
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::{assignment, flow_spec, key};
    use kmirror_common::schema::{FlowPhase, FlowSpec, RebalanceRequest};

    #[test]
    fn an_unchanged_flow_state_is_not_written_again() {
        let mut snapshot = Snapshot::default();
        let flow = flow_spec("dr");
        snapshot.flows.insert(flow.name.clone(), flow.clone());
        let stored = FlowState {
            topics: vec!["orders".to_string()],
            updated_ms: 1,
            ..FlowState::default()
        };
        snapshot
            .flow_states
            .insert(flow.name.clone(), stored.clone());
        let discovered = BTreeMap::from([(
            flow.name.clone(),
            FlowDiscovery {
                topics: vec!["orders".to_string()],
                ..FlowDiscovery::default()
            },
        )]);
        let running = BTreeMap::from([(flow.name.clone(), stored)]);
        assert!(flow_state_updates(&snapshot, running.clone(), &discovered, 99).is_empty());
        let mut failing = discovered;
        failing.get_mut(&flow.name).unwrap().errors = vec!["a".to_string(), "b".to_string()];
        let updates = flow_state_updates(&snapshot, running, &failing, 99);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].1.error, "a; b");
        assert_eq!(updates[0].1.updated_ms, 99);
    }

    #[test]
    fn a_paused_flow_is_recorded_paused_without_an_error_and_its_partitions_are_released() {
        let mut snapshot = Snapshot::default();
        let flow = FlowSpec {
            paused: true,
            ..flow_spec("dr")
        };
        snapshot.flows.insert(flow.name.clone(), flow.clone());
        snapshot.members.insert(
            (Role::Fetcher, MemberId::new("f1").unwrap()),
            kmirror_common::schema::MemberInfo {
                id: MemberId::new("f1").unwrap(),
                role: Role::Fetcher,
                address: String::new(),
                version: String::new(),
                started_ms: 0,
                metrics_address: None,
            },
        );
        snapshot
            .assignments
            .insert(key("dr", "orders", 0), assignment());
        snapshot.flow_states.insert(
            flow.name.clone(),
            FlowState {
                error: "was failing".to_string(),
                ..FlowState::default()
            },
        );
        let decision = decide_round(
            &snapshot,
            RoundInput {
                now_ms: 7,
                ..RoundInput::default()
            },
        );
        assert_eq!(decision.summary.removed, 1);
        assert_eq!(
            decision.assignments,
            vec![AssignmentWrite::Put(
                key("dr", "orders", 0),
                Assignment {
                    releasing_since_ms: Some(7),
                    ..assignment()
                }
            )]
        );
        assert_eq!(decision.flow_states.len(), 1);
        assert_eq!(decision.flow_states[0].1.phase, FlowPhase::Paused);
        assert_eq!(decision.flow_states[0].1.error, "");
    }

    #[test]
    fn a_served_rebalance_request_is_cleared_and_drain_marks_of_departed_members_go_after_the_grace(
    ) {
        let mut snapshot = Snapshot {
            rebalance_opt: Some(RebalanceRequest { requested_ms: 0 }),
            ..Snapshot::default()
        };
        snapshot
            .drained
            .insert((Role::Writer, MemberId::new("w9").unwrap()));
        let in_grace = decide_round(
            &snapshot,
            RoundInput {
                in_grace: true,
                ..RoundInput::default()
            },
        );
        assert!(in_grace.rebalance_served);
        assert!(in_grace.departed_drains.is_empty());
        let after = decide_round(&snapshot, RoundInput::default());
        assert_eq!(
            after.departed_drains,
            vec![(Role::Writer, MemberId::new("w9").unwrap())]
        );
    }

    #[test]
    fn partitions_no_fleet_member_can_take_are_reported_on_their_flow() {
        let mut snapshot = Snapshot::default();
        let flow = flow_spec("dr");
        snapshot.flows.insert(flow.name.clone(), flow.clone());
        let discovered = BTreeMap::from([(
            flow.name.clone(),
            FlowDiscovery {
                partitions: vec![crate::round::topics::carried(
                    &key("dr", "orders", 0),
                    &assignment(),
                )],
                ..FlowDiscovery::default()
            },
        )]);
        let decision = decide_round(
            &snapshot,
            RoundInput {
                discovered,
                ..RoundInput::default()
            },
        );
        assert_eq!(
            decision.flow_states[0].1.error,
            "no live fetcher and no live writer in the fleet: 1 partitions are not assigned"
        );
    }
}
