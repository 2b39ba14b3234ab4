//! The planner's input from a snapshot, and what becomes of assignments the plan
//! no longer wants. Pure; the round and the admin API's rebalance dry run build
//! their [`Problem`] the same way, so the dry run shows what a rebalance does.

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::{Assignment, Checkpoint, RELEASE_TIMEOUT_MS};
use kmirror_common::{Epoch, FlowName, MemberId, PartitionKey, Role};

use crate::planner::{Problem, WantedPartition, DEFAULT_TOLERANCE};
use crate::store::Snapshot;

/// How a snapshot becomes a planning problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanningMode {
    /// A rebalance: plan by measured rates with tolerance 0. Otherwise partitions
    /// count alike and the default tolerance applies.
    pub rebalance: bool,
    /// Members named by existing assignments count as live (the leader's grace
    /// after taking the lead).
    pub assigned_members_live: bool,
}

impl Problem {
    /// The problem of planning `partitions` over the snapshot's live members that
    /// are not drained, at the epoch after the snapshot's revision.
    ///
    /// Measured rates drive a rebalance only. Every move makes the new owner
    /// resend what the old one had in flight, so routine rounds balance by
    /// partition count, which stays put while rates fluctuate: partitions move
    /// when members come and go, not with the traffic.
    pub fn from_snapshot(
        snapshot: &Snapshot,
        mut partitions: Vec<WantedPartition>,
        mode: PlanningMode,
        now_ms: i64,
    ) -> Problem {
        if mode.rebalance {
            for partition in &mut partitions {
                partition.bytes_per_sec =
                    current_rate(snapshot.checkpoints.get(&partition.key), now_ms);
            }
        }
        let mut live_writers = live_members(snapshot, Role::Writer, mode.assigned_members_live);
        let writers_avoided = writers_avoided(snapshot, &partitions, &mut live_writers);
        Problem {
            partitions,
            live_fetchers: live_members(snapshot, Role::Fetcher, mode.assigned_members_live),
            live_writers,
            writers_avoided,
            // Later rounds read later revisions (a round that changes anything
            // writes), so epochs grow across the fleet.
            epoch: round_epoch(snapshot),
            tolerance: if mode.rebalance {
                0.0
            } else {
                DEFAULT_TOLERANCE
            },
        }
    }
}

/// Which live writers each flow of `partitions` must avoid: those that said they
/// cannot deliver to its destination cluster, unless every live writer said so
/// (moving would not help; the partitions stay where they are). A writer every
/// such flow avoids is taken out of `live_writers`: it keeps nothing, as if
/// drained, until it reaches its clusters again.
pub fn writers_avoided(
    snapshot: &Snapshot,
    partitions: &[WantedPartition],
    live_writers: &mut BTreeSet<MemberId>,
) -> BTreeMap<FlowName, BTreeSet<MemberId>> {
    let flows: BTreeSet<&FlowName> = partitions
        .iter()
        .map(|partition| &partition.key.flow)
        .collect();
    let mut avoided: BTreeMap<FlowName, BTreeSet<MemberId>> = BTreeMap::new();
    for flow in flows {
        let Some(spec) = snapshot.flows.get(flow) else {
            continue;
        };
        let cannot: BTreeSet<MemberId> = live_writers
            .iter()
            .filter(|writer| {
                snapshot
                    .undeliverable
                    .contains_key(&((*writer).clone(), spec.dest_cluster.clone()))
            })
            .cloned()
            .collect();
        if !cannot.is_empty() && cannot.len() < live_writers.len() {
            avoided.insert(flow.clone(), cannot);
        }
    }
    let flow_count = partitions
        .iter()
        .map(|partition| &partition.key.flow)
        .collect::<BTreeSet<_>>()
        .len();
    let avoided_by_all: Vec<MemberId> = live_writers
        .iter()
        .filter(|writer| {
            flow_count > 0
                && avoided.len() == flow_count
                && avoided.values().all(|set| set.contains(*writer))
        })
        .cloned()
        .collect();
    for writer in &avoided_by_all {
        live_writers.remove(writer);
        for set in avoided.values_mut() {
            set.remove(writer);
        }
    }
    avoided.retain(|_, set| !set.is_empty());
    avoided
}

/// The epoch of what a round reading `snapshot` writes.
pub fn round_epoch(snapshot: &Snapshot) -> Epoch {
    Epoch(snapshot.revision as u64 + 1)
}

/// Registered members of a role that are not drained (drained members keep
/// nothing and get nothing new), plus, with `assigned_members_live`, those named
/// by assignments.
pub fn live_members(
    snapshot: &Snapshot,
    role: Role,
    assigned_members_live: bool,
) -> BTreeSet<MemberId> {
    let mut live: BTreeSet<MemberId> = snapshot
        .members_of(role)
        .filter(|id| !snapshot.is_drained(role, id))
        .cloned()
        .collect();
    if assigned_members_live {
        for assignment in snapshot.assignments.values() {
            let id = match role {
                Role::Fetcher => &assignment.fetcher,
                Role::Writer => &assignment.writer,
                _ => continue,
            };
            if !snapshot.is_drained(role, id) {
                live.insert(id.clone());
            }
        }
    }
    live
}

/// A partition's bytes/s as its fetcher last measured it; 0 when its checkpoint
/// has not moved for a minute (the partition is idle or stopped).
pub fn current_rate(checkpoint_opt: Option<&Checkpoint>, now_ms: i64) -> f64 {
    match checkpoint_opt {
        Some(checkpoint) if now_ms - checkpoint.updated_ms <= 60_000 => checkpoint.bytes_per_sec,
        _ => 0.0,
    }
}

/// The wanted partitions a round plans: a partition being released is planned
/// again only once its fetcher let go of it (its final checkpoint is where the
/// next owner starts), and a held one (the source no longer has its position)
/// only once an operator reset it; until then its assignment is released.
pub fn plannable(
    snapshot: &Snapshot,
    wanted: impl IntoIterator<Item = WantedPartition>,
) -> Vec<WantedPartition> {
    wanted
        .into_iter()
        .filter(|partition| {
            !snapshot
                .assignments
                .get(&partition.key)
                .is_some_and(Assignment::is_releasing)
                && !snapshot.holds.contains_key(&partition.key)
        })
        .collect()
}

/// The assignments a round's plan starts from: those of existing flows that are
/// not being released.
pub fn previous_assignments(snapshot: &Snapshot) -> BTreeMap<PartitionKey, Assignment> {
    snapshot
        .assignments
        .iter()
        .filter(|(key, assignment)| {
            snapshot.flows.contains_key(&key.flow) && !assignment.is_releasing()
        })
        .map(|(key, assignment)| (key.clone(), assignment.clone()))
        .collect()
}

/// What becomes of an assignment the plan no longer wants, or of one being
/// released.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseStep {
    /// Ask its fetcher to stop gracefully and give the partition back.
    Release(PartitionKey, Assignment),
    /// Remove it outright.
    Delete(PartitionKey, ReleaseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// No fetcher is there to release it: nothing is in flight.
    FetcherGone,
    /// The fetcher had [`RELEASE_TIMEOUT_MS`] and did not.
    TimedOut,
}

/// Unwanted partitions are released by their fetcher (final checkpoint, then it
/// deletes the assignment) rather than taken away, which would drop what it has
/// in flight and leave it unrecorded; an assignment whose fetcher is gone, or that
/// was not released in time, is deleted.
pub fn release_steps(
    assignments: &BTreeMap<PartitionKey, Assignment>,
    removed: &BTreeSet<PartitionKey>,
    fetcher_registered: impl Fn(&MemberId) -> bool,
    now_ms: i64,
) -> Vec<ReleaseStep> {
    let mut steps = Vec::new();
    for (key, assignment) in assignments {
        let releasing_since_opt = assignment.releasing_since_ms;
        if releasing_since_opt.is_none() && !removed.contains(key) {
            continue;
        }
        if !fetcher_registered(&assignment.fetcher) {
            steps.push(ReleaseStep::Delete(key.clone(), ReleaseReason::FetcherGone));
            continue;
        }
        match releasing_since_opt {
            None => steps.push(ReleaseStep::Release(
                key.clone(),
                Assignment {
                    releasing_since_ms: Some(now_ms),
                    ..assignment.clone()
                },
            )),
            Some(since_ms) if now_ms - since_ms > RELEASE_TIMEOUT_MS => {
                steps.push(ReleaseStep::Delete(key.clone(), ReleaseReason::TimedOut))
            }
            Some(_) => {}
        }
    }
    steps
}

/// Why `count` partitions of a flow could not be assigned.
pub fn unassignable_reason(problem: &Problem, count: usize) -> String {
    let missing = match (
        problem.live_fetchers.is_empty(),
        problem.live_writers.is_empty(),
    ) {
        (true, true) => "no live fetcher and no live writer",
        (true, false) => "no live fetcher",
        _ => "no live writer",
    };
    format!("{missing} in the fleet: {count} partitions are not assigned")
}

/// Flows that left something behind (assignments, a state) but no longer exist.
pub fn deleted_flows(snapshot: &Snapshot) -> BTreeSet<FlowName> {
    snapshot
        .assignments
        .keys()
        .map(|key| &key.flow)
        .chain(snapshot.flow_states.keys())
        .filter(|flow| !snapshot.flows.contains_key(*flow))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{plan, Plan};
    use crate::round::test_support::{assignment, checkpoint, flow_spec, key};
    use crate::round::topics::carried;
    use kmirror_common::schema::{FlowState, MemberInfo, RebalanceRequest, Undeliverable};
    use kmirror_common::ClusterName;

    #[test]
    fn an_unwanted_partition_is_released_by_its_live_fetcher_not_taken_away() {
        let kept = key("dr", "orders", 0);
        let unwanted = key("dr", "orders", 1);
        let assignments = BTreeMap::from([
            (kept.clone(), assignment()),
            (unwanted.clone(), assignment()),
        ]);
        let steps = release_steps(
            &assignments,
            &BTreeSet::from([unwanted.clone()]),
            |_| true,
            1_000,
        );
        let released = Assignment {
            releasing_since_ms: Some(1_000),
            ..assignment()
        };
        assert_eq!(steps, vec![ReleaseStep::Release(unwanted, released)]);
    }

    #[test]
    fn a_release_waits_for_its_fetcher_until_the_timeout() {
        let key = key("dr", "orders", 0);
        let since = 1_000;
        let assignments = BTreeMap::from([(
            key.clone(),
            Assignment {
                releasing_since_ms: Some(since),
                ..assignment()
            },
        )]);
        // Still wanted or not, a partition being released stays so.
        for removed in [BTreeSet::new(), BTreeSet::from([key.clone()])] {
            let waiting =
                release_steps(&assignments, &removed, |_| true, since + RELEASE_TIMEOUT_MS);
            assert!(waiting.is_empty(), "{waiting:?}");
        }
        let late = release_steps(
            &assignments,
            &BTreeSet::new(),
            |_| true,
            since + RELEASE_TIMEOUT_MS + 1,
        );
        assert_eq!(
            late,
            vec![ReleaseStep::Delete(key, ReleaseReason::TimedOut)]
        );
    }

    #[test]
    fn a_partition_whose_fetcher_is_gone_is_unassigned_at_once() {
        let key = key("dr", "orders", 0);
        let assignments = BTreeMap::from([(key.clone(), assignment())]);
        let steps = release_steps(&assignments, &BTreeSet::from([key.clone()]), |_| false, 0);
        assert_eq!(
            steps,
            vec![ReleaseStep::Delete(key, ReleaseReason::FetcherGone)]
        );
    }

    #[test]
    fn deleted_flows_are_those_with_leftovers_but_no_spec() {
        let mut snapshot = Snapshot::default();
        let live = FlowName::new("live").unwrap();
        let gone = FlowName::new("gone").unwrap();
        let gone_too = FlowName::new("gone-too").unwrap();
        snapshot.flows.insert(live.clone(), flow_spec("live"));
        snapshot
            .assignments
            .insert(key("live", "orders", 0), assignment());
        snapshot
            .assignments
            .insert(key("gone", "orders", 0), assignment());
        snapshot
            .flow_states
            .insert(gone_too.clone(), FlowState::default());
        let deleted: Vec<FlowName> = deleted_flows(&snapshot).into_iter().collect();
        assert_eq!(deleted, vec![gone, gone_too]);
    }

    #[test]
    fn the_unassignable_reason_names_the_missing_role() {
        let problem = Problem {
            partitions: vec![],
            live_fetchers: BTreeSet::from([MemberId::new("f1").unwrap()]),
            live_writers: BTreeSet::new(),
            writers_avoided: BTreeMap::new(),
            epoch: Epoch(1),
            tolerance: DEFAULT_TOLERANCE,
        };
        assert_eq!(
            unassignable_reason(&problem, 3),
            "no live writer in the fleet: 3 partitions are not assigned"
        );
    }

    fn member(role: Role, id: &str) -> ((Role, MemberId), MemberInfo) {
        let id = MemberId::new(id).unwrap();
        let info = MemberInfo {
            id: id.clone(),
            role,
            address: String::new(),
            version: String::new(),
            started_ms: 0,
            metrics_address: None,
        };
        ((role, id), info)
    }

    fn measured(bytes_per_sec: f64, updated_ms: i64) -> Checkpoint {
        Checkpoint {
            bytes_per_sec,
            updated_ms,
            ..checkpoint(0)
        }
    }

    #[test]
    fn a_rebalance_plans_by_measured_rates_with_no_tolerance_and_routine_rounds_by_count() {
        let mut snapshot = Snapshot {
            revision: 41,
            ..Snapshot::default()
        };
        snapshot
            .checkpoints
            .insert(key("dr", "orders", 0), measured(500.0, 100_000));
        snapshot
            .checkpoints
            .insert(key("dr", "orders", 1), measured(900.0, 0));
        snapshot.rebalance_opt = Some(RebalanceRequest { requested_ms: 0 });
        let wanted = vec![
            carried(&key("dr", "orders", 0), &assignment()),
            carried(&key("dr", "orders", 1), &assignment()),
        ];
        let rebalance = PlanningMode {
            rebalance: true,
            assigned_members_live: false,
        };
        let problem = Problem::from_snapshot(&snapshot, wanted.clone(), rebalance, 120_000);
        // The second partition's checkpoint has not moved for over a minute.
        let rates: Vec<f64> = problem.partitions.iter().map(|p| p.bytes_per_sec).collect();
        assert_eq!(rates, vec![500.0, 0.0]);
        assert_eq!(problem.tolerance, 0.0);
        assert_eq!(problem.epoch, Epoch(42));
        let routine = PlanningMode {
            rebalance: false,
            ..rebalance
        };
        let problem = Problem::from_snapshot(&snapshot, wanted, routine, 120_000);
        assert!(problem.partitions.iter().all(|p| p.bytes_per_sec == 0.0));
        assert_eq!(problem.tolerance, DEFAULT_TOLERANCE);
    }

    /// A fleet of fetcher f1 and writers w1, w2 with flow `dr` (to cluster
    /// `dst`) whose partitions 0..4 all run on w1, and flow `other` to cluster
    /// `elsewhere` with one partition on w1.
    fn two_writers_and_two_destinations() -> (Snapshot, Vec<WantedPartition>) {
        let mut snapshot = Snapshot {
            revision: 9,
            ..Snapshot::default()
        };
        snapshot.members.extend([
            member(Role::Fetcher, "f1"),
            member(Role::Writer, "w1"),
            member(Role::Writer, "w2"),
        ]);
        snapshot
            .flows
            .insert(FlowName::new("dr").unwrap(), flow_spec("dr"));
        let mut other = flow_spec("other");
        other.dest_cluster = ClusterName::new("elsewhere").unwrap();
        snapshot
            .flows
            .insert(FlowName::new("other").unwrap(), other);
        let mut wanted = Vec::new();
        for (flow, partition) in [("dr", 0), ("dr", 1), ("dr", 2), ("dr", 3), ("other", 0)] {
            let key = key(flow, "orders", partition);
            snapshot.assignments.insert(key.clone(), assignment());
            wanted.push(carried(&key, &assignment()));
        }
        (snapshot, wanted)
    }

    fn cannot_deliver(snapshot: &mut Snapshot, writer: &str, cluster: &str) {
        snapshot.undeliverable.insert(
            (
                MemberId::new(writer).unwrap(),
                ClusterName::new(cluster).unwrap(),
            ),
            Undeliverable {
                since_ms: 0,
                reason: "Local: Message timed out".to_string(),
            },
        );
    }

    fn writers_of(plan: &Plan, flow: &str) -> BTreeSet<String> {
        plan.assignments
            .iter()
            .filter(|(key, _)| key.flow.as_str() == flow)
            .map(|(_, assignment)| assignment.writer.to_string())
            .collect()
    }

    const ROUTINE: PlanningMode = PlanningMode {
        rebalance: false,
        assigned_members_live: false,
    };

    #[test]
    fn a_writer_that_cannot_deliver_hands_that_clusters_partitions_to_one_that_can() {
        let (mut snapshot, wanted) = two_writers_and_two_destinations();
        cannot_deliver(&mut snapshot, "w1", "dst");
        let problem = Problem::from_snapshot(&snapshot, wanted, ROUTINE, 0);
        let plan = plan(&problem, &previous_assignments(&snapshot));
        assert_eq!(writers_of(&plan, "dr"), BTreeSet::from(["w2".to_string()]));
        // Its other destination is reachable: that partition stays.
        assert_eq!(
            writers_of(&plan, "other"),
            BTreeSet::from(["w1".to_string()])
        );
        assert!(plan.unassigned.is_empty());
    }

    #[test]
    fn a_writer_that_reaches_none_of_its_clusters_keeps_nothing_and_balance_ignores_it() {
        let (mut snapshot, wanted) = two_writers_and_two_destinations();
        cannot_deliver(&mut snapshot, "w1", "dst");
        cannot_deliver(&mut snapshot, "w1", "elsewhere");
        let problem = Problem::from_snapshot(&snapshot, wanted, ROUTINE, 0);
        assert_eq!(
            problem.live_writers,
            BTreeSet::from([MemberId::new("w2").unwrap()])
        );
        let plan = plan(&problem, &previous_assignments(&snapshot));
        assert_eq!(writers_of(&plan, "dr"), BTreeSet::from(["w2".to_string()]));
        assert_eq!(
            writers_of(&plan, "other"),
            BTreeSet::from(["w2".to_string()])
        );
    }

    #[test]
    fn when_no_writer_can_deliver_the_partitions_stay_where_they_are() {
        let (mut snapshot, wanted) = two_writers_and_two_destinations();
        cannot_deliver(&mut snapshot, "w1", "dst");
        cannot_deliver(&mut snapshot, "w2", "dst");
        let problem = Problem::from_snapshot(&snapshot, wanted, ROUTINE, 0);
        assert!(problem.writers_avoided.is_empty());
        let previous = previous_assignments(&snapshot);
        let plan = plan(&problem, &previous);
        // Moving would not help: only the routine balance moves partitions, and
        // it may move any of them to w2 (which is as stuck as w1).
        assert_eq!(plan.assignments.len(), previous.len());
        assert!(plan.unassigned.is_empty());
    }

    #[test]
    fn a_writer_that_reaches_its_cluster_again_gets_partitions_again() {
        let (snapshot, wanted) = two_writers_and_two_destinations();
        let problem = Problem::from_snapshot(&snapshot, wanted, ROUTINE, 0);
        assert!(problem.writers_avoided.is_empty());
        let plan = plan(&problem, &previous_assignments(&snapshot));
        // Plain balance: w2 takes its share of w1's five partitions.
        assert!(writers_of(&plan, "dr").contains("w2"));
        assert!(writers_of(&plan, "dr").contains("w1"));
    }

    #[test]
    fn in_the_grace_members_named_by_assignments_count_as_live_unless_drained() {
        let mut snapshot = Snapshot::default();
        snapshot
            .members
            .extend([member(Role::Fetcher, "f2"), member(Role::Fetcher, "f3")]);
        snapshot
            .drained
            .insert((Role::Fetcher, MemberId::new("f3").unwrap()));
        snapshot
            .assignments
            .insert(key("dr", "orders", 0), assignment());
        let ids =
            |live: BTreeSet<MemberId>| live.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            ids(live_members(&snapshot, Role::Fetcher, false)),
            vec!["f2"]
        );
        assert_eq!(
            ids(live_members(&snapshot, Role::Fetcher, true)),
            vec!["f1", "f2"]
        );
        assert_eq!(ids(live_members(&snapshot, Role::Writer, true)), vec!["w1"]);
        snapshot
            .drained
            .insert((Role::Fetcher, MemberId::new("f1").unwrap()));
        assert_eq!(
            ids(live_members(&snapshot, Role::Fetcher, true)),
            vec!["f2"]
        );
    }

    #[test]
    fn a_held_partition_is_not_planned_and_its_assignment_is_released_until_reset() {
        let mut snapshot = Snapshot::default();
        snapshot
            .flows
            .insert(FlowName::new("dr").unwrap(), flow_spec("dr"));
        snapshot.members.extend([member(Role::Fetcher, "f1")]);
        for partition in 0..2 {
            snapshot
                .assignments
                .insert(key("dr", "orders", partition), assignment());
        }
        snapshot.holds.insert(
            key("dr", "orders", 1),
            kmirror_common::schema::PartitionHold {
                reason: kmirror_common::schema::HoldReason::RetentionGap,
                position: 10,
                log_start: 20,
                log_end: 30,
                message: "source log start 20 passed checkpoint 10: offsets 10..19 lost"
                    .to_string(),
                detected_ms: 0,
                detected_by: MemberId::new("f1").unwrap(),
            },
        );
        let wanted = plannable(
            &snapshot,
            (0..2).map(|partition| carried(&key("dr", "orders", partition), &assignment())),
        );
        let planned: Vec<PartitionKey> = wanted.iter().map(|p| p.key.clone()).collect();
        assert_eq!(planned, vec![key("dr", "orders", 0)]);
        // The plan drops it: its fetcher is asked to give it back.
        let removed = BTreeSet::from([key("dr", "orders", 1)]);
        let steps = release_steps(&snapshot.assignments, &removed, |_| true, 5);
        assert!(
            matches!(&steps[..], [ReleaseStep::Release(released, _)] if *released == key("dr", "orders", 1))
        );
        // Reset: the hold is gone, and it is planned again.
        snapshot.holds.clear();
        assert_eq!(
            plannable(&snapshot, [carried(&key("dr", "orders", 1), &assignment())]).len(),
            1
        );
    }

    #[test]
    fn a_partition_being_released_is_neither_planned_nor_planned_from() {
        let mut snapshot = Snapshot::default();
        snapshot
            .flows
            .insert(FlowName::new("dr").unwrap(), flow_spec("dr"));
        let releasing = Assignment {
            releasing_since_ms: Some(1),
            ..assignment()
        };
        snapshot
            .assignments
            .insert(key("dr", "orders", 0), releasing);
        snapshot
            .assignments
            .insert(key("dr", "orders", 1), assignment());
        snapshot
            .assignments
            .insert(key("gone", "orders", 0), assignment());
        let wanted = plannable(
            &snapshot,
            (0..2).map(|partition| carried(&key("dr", "orders", partition), &assignment())),
        );
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].key, key("dr", "orders", 1));
        let previous: Vec<PartitionKey> = previous_assignments(&snapshot).into_keys().collect();
        assert_eq!(previous, vec![key("dr", "orders", 1)]);
    }
}
