#![doc = include_str!("README.md")]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::Assignment;
use kmirror_common::{Epoch, FlowName, MemberId, PartitionKey, Role};

/// The balance tolerance of every reconcile round: a member may carry 10 % more
/// (or less) than the mean before running partitions are moved.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// A source partition that should be mirrored, with the shape its assignment carries.
#[derive(Debug, Clone, PartialEq)]
pub struct WantedPartition {
    pub key: PartitionKey,
    pub dest_topic: String,
    pub dest_partitions: i32,
    pub source_partitions: i32,
    /// Throughput the fetcher last measured (0 when unknown or idle).
    pub bytes_per_sec: f64,
}

/// Everything the plan depends on.
#[derive(Debug, Clone)]
pub struct Problem {
    pub partitions: Vec<WantedPartition>,
    pub live_fetchers: BTreeSet<MemberId>,
    pub live_writers: BTreeSet<MemberId>,
    /// Live writers a flow's partitions must not go to (they cannot deliver to
    /// its destination cluster). Never all of them: a writer avoided by every
    /// flow is simply not live.
    pub writers_avoided: BTreeMap<FlowName, BTreeSet<MemberId>>,
    /// Epoch of every assignment this plan creates or changes.
    pub epoch: Epoch,
    /// How far above or below the mean a member's load may be, as a share of the
    /// mean (see the README for the bound).
    pub tolerance: f64,
}

/// The outcome: the complete set of assignments, and how it differs from the
/// previous one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub assignments: BTreeMap<PartitionKey, Assignment>,
    /// Partitions whose assignment is new or changed: to write.
    pub changed: BTreeSet<PartitionKey>,
    /// Previously assigned partitions without an assignment now: to delete.
    pub removed: BTreeSet<PartitionKey>,
    /// Wanted partitions that have no live fetcher or no live writer to go to.
    pub unassigned: BTreeSet<PartitionKey>,
}

/// A running partition handed from one member to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Move {
    pub key: PartitionKey,
    pub role: Role,
    pub from: MemberId,
    pub to: MemberId,
}

impl Plan {
    /// Partitions that had an owner of a role before and have another one now.
    pub fn moves(&self, previous: &BTreeMap<PartitionKey, Assignment>) -> Vec<Move> {
        let mut moves = Vec::new();
        for key in &self.changed {
            let (Some(before), Some(after)) = (previous.get(key), self.assignments.get(key)) else {
                continue;
            };
            if before.fetcher != after.fetcher {
                moves.push(Move {
                    key: key.clone(),
                    role: Role::Fetcher,
                    from: before.fetcher.clone(),
                    to: after.fetcher.clone(),
                });
            }
            if before.writer != after.writer {
                moves.push(Move {
                    key: key.clone(),
                    role: Role::Writer,
                    from: before.writer.clone(),
                    to: after.writer.clone(),
                });
            }
        }
        moves
    }
}

/// The weight of each partition: 1 plus its bytes/s divided by the mean bytes/s
/// of the partitions with a measured rate. Without any measured rate every
/// partition weighs 1 (balance by partition count); an idle partition still weighs
/// 1, so no member piles up idle partitions.
pub fn partition_weights(partitions: &[&WantedPartition]) -> BTreeMap<PartitionKey, f64> {
    let measured: Vec<f64> = partitions
        .iter()
        .map(|partition| partition.bytes_per_sec)
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .collect();
    let unit_opt = if measured.is_empty() {
        None
    } else {
        Some(measured.iter().sum::<f64>() / measured.len() as f64)
    };
    partitions
        .iter()
        .map(|partition| {
            let rate = if partition.bytes_per_sec.is_finite() {
                partition.bytes_per_sec.max(0.0)
            } else {
                0.0
            };
            let weight = match unit_opt {
                Some(unit) => 1.0 + rate / unit,
                None => 1.0,
            };
            (partition.key.clone(), weight)
        })
        .collect()
}

/// Plans the assignments (see the module documentation for the objectives).
pub fn plan(problem: &Problem, previous: &BTreeMap<PartitionKey, Assignment>) -> Plan {
    let mut wanted: Vec<&WantedPartition> = problem.partitions.iter().collect();
    wanted.sort_by(|left, right| left.key.cmp(&right.key));
    wanted.dedup_by(|left, right| left.key == right.key);
    let weights = partition_weights(&wanted);
    let weight_of = |key: &PartitionKey| weights.get(key).copied().unwrap_or(1.0);
    let writer_may_take = |key: &PartitionKey, writer: &MemberId| {
        problem
            .writers_avoided
            .get(&key.flow)
            .is_none_or(|avoided| !avoided.contains(writer))
    };

    let mut fetchers = Loads::new(&problem.live_fetchers);
    let mut writers = Loads::new(&problem.live_writers);
    let mut outcome = Plan::default();
    let mut to_place = Vec::new();
    // Kept assignments are counted first so orphans are placed on top of the real
    // load, not on top of a half-built one.
    for partition in &wanted {
        match previous.get(&partition.key) {
            Some(assignment)
                if fetchers.is_live(&assignment.fetcher)
                    && writers.is_live(&assignment.writer)
                    && writer_may_take(&partition.key, &assignment.writer)
                    && same_shape(assignment, partition) =>
            {
                let weight = weight_of(&partition.key);
                fetchers.add(&assignment.fetcher, &partition.key, weight);
                writers.add(&assignment.writer, &partition.key, weight);
                outcome
                    .assignments
                    .insert(partition.key.clone(), assignment.clone());
            }
            _ => to_place.push(*partition),
        }
    }

    // Heaviest first, each onto the least-loaded member: the classic greedy that
    // keeps every member within one partition's weight of the others.
    to_place.sort_by(|left, right| {
        weight_of(&right.key)
            .total_cmp(&weight_of(&left.key))
            .then_with(|| left.key.cmp(&right.key))
    });
    for partition in to_place {
        let weight = weight_of(&partition.key);
        let previous_opt = previous.get(&partition.key);
        let fetcher_opt = previous_opt
            .map(|assignment| &assignment.fetcher)
            .filter(|fetcher| fetchers.is_live(fetcher))
            .cloned()
            .or_else(|| fetchers.least_loaded());
        let writer_opt = previous_opt
            .map(|assignment| &assignment.writer)
            .filter(|writer| writers.is_live(writer) && writer_may_take(&partition.key, writer))
            .cloned()
            .or_else(|| writers.least_loaded_of(|writer| writer_may_take(&partition.key, writer)));
        let (Some(fetcher), Some(writer)) = (fetcher_opt, writer_opt) else {
            // Nobody can take it: keep the previous owner (it may come back under
            // the same id) rather than leave the partition without an assignment.
            outcome.unassigned.insert(partition.key.clone());
            if let Some(assignment) = previous_opt {
                outcome
                    .assignments
                    .insert(partition.key.clone(), assignment.clone());
            }
            continue;
        };
        fetchers.add(&fetcher, &partition.key, weight);
        writers.add(&writer, &partition.key, weight);
        outcome.assignments.insert(
            partition.key.clone(),
            Assignment {
                fetcher,
                writer,
                epoch: problem.epoch,
                dest_topic: partition.dest_topic.clone(),
                dest_partitions: partition.dest_partitions,
                source_partitions: partition.source_partitions,
                releasing_since_ms: None,
            },
        );
        outcome.changed.insert(partition.key.clone());
    }

    let anyone_may_take = |_: &PartitionKey, _: &MemberId| true;
    for (role, loads, may_take) in [
        (
            Role::Fetcher,
            &mut fetchers,
            &anyone_may_take as &dyn Fn(&PartitionKey, &MemberId) -> bool,
        ),
        (Role::Writer, &mut writers, &writer_may_take),
    ] {
        for (key, to) in loads.balance(problem.tolerance, may_take) {
            let assignment = outcome
                .assignments
                .get_mut(&key)
                .expect("a balanced partition is assigned");
            match role {
                Role::Writer => assignment.writer = to,
                _ => assignment.fetcher = to,
            }
            assignment.epoch = problem.epoch;
            outcome.changed.insert(key);
        }
    }

    for key in previous.keys() {
        if !outcome.assignments.contains_key(key) {
            outcome.removed.insert(key.clone());
        }
    }
    // A partition moved away and back within one plan is unchanged after all: it
    // keeps its epoch.
    let returned: Vec<PartitionKey> = outcome
        .changed
        .iter()
        .filter(
            |key| match (previous.get(*key), outcome.assignments.get(*key)) {
                (Some(before), Some(after)) => {
                    before.fetcher == after.fetcher
                        && before.writer == after.writer
                        && before.dest_topic == after.dest_topic
                        && before.dest_partitions == after.dest_partitions
                        && before.source_partitions == after.source_partitions
                }
                _ => false,
            },
        )
        .cloned()
        .collect();
    for key in returned {
        outcome.changed.remove(&key);
        outcome
            .assignments
            .insert(key.clone(), previous[&key].clone());
    }
    outcome
}

fn same_shape(assignment: &Assignment, partition: &WantedPartition) -> bool {
    assignment.dest_topic == partition.dest_topic
        && assignment.dest_partitions == partition.dest_partitions
        && assignment.source_partitions == partition.source_partitions
}

/// The bound a balanced plan keeps every member of a role within:
/// `|load - mean| <= max(largest partition weight, tolerance * mean)`.
pub fn slack(mean: f64, largest_weight: f64, tolerance: f64) -> f64 {
    largest_weight.max(tolerance * mean)
}

/// An `f64` ordered by `total_cmp`, for sorted sets of loads and weights.
#[derive(Debug, Clone, Copy)]
struct Ordered(f64);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0) == Ordering::Equal
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Load of every live member of one role, and which partitions make it up.
struct Loads {
    load_by_member: BTreeMap<MemberId, f64>,
    /// (load, member), for the most and least loaded member in log time.
    by_load: BTreeSet<(Ordered, MemberId)>,
    partitions_by_member: BTreeMap<MemberId, BTreeSet<(Ordered, PartitionKey)>>,
}

impl Loads {
    fn new(live_members: &BTreeSet<MemberId>) -> Self {
        Self {
            load_by_member: live_members.iter().map(|id| (id.clone(), 0.0)).collect(),
            by_load: live_members
                .iter()
                .map(|id| (Ordered(0.0), id.clone()))
                .collect(),
            partitions_by_member: live_members
                .iter()
                .map(|id| (id.clone(), BTreeSet::new()))
                .collect(),
        }
    }

    fn is_live(&self, member: &MemberId) -> bool {
        self.load_by_member.contains_key(member)
    }

    fn set_load(&mut self, member: &MemberId, load: f64) {
        if let Some(current) = self.load_by_member.get_mut(member) {
            self.by_load.remove(&(Ordered(*current), member.clone()));
            *current = load;
            self.by_load.insert((Ordered(load), member.clone()));
        }
    }

    fn add(&mut self, member: &MemberId, key: &PartitionKey, weight: f64) {
        let Some(&load) = self.load_by_member.get(member) else {
            return;
        };
        self.set_load(member, load + weight);
        if let Some(partitions) = self.partitions_by_member.get_mut(member) {
            partitions.insert((Ordered(weight), key.clone()));
        }
    }

    fn remove(&mut self, member: &MemberId, key: &PartitionKey, weight: f64) {
        let Some(&load) = self.load_by_member.get(member) else {
            return;
        };
        self.set_load(member, load - weight);
        if let Some(partitions) = self.partitions_by_member.get_mut(member) {
            partitions.remove(&(Ordered(weight), key.clone()));
        }
    }

    /// The member with the least load; the smallest id among equals.
    fn least_loaded(&self) -> Option<MemberId> {
        self.by_load.first().map(|(_, id)| id.clone())
    }

    /// The least loaded member of those `eligible` accepts.
    fn least_loaded_of(&self, eligible: impl Fn(&MemberId) -> bool) -> Option<MemberId> {
        self.by_load
            .iter()
            .map(|(_, id)| id)
            .find(|id| eligible(id))
            .cloned()
    }

    /// Moves partitions from the most to the least loaded member until every
    /// member is within the bound of the mean (see [`slack`]). Returns the moves
    /// (partition, new member) in the order made.
    ///
    /// Each move strictly lowers the sum of squared loads, so the loop ends; it
    /// only stops early when no move improves anything, which the bound rules out
    /// (a member outside it always has a partition whose move helps): see README.
    /// Only partitions `may_take` lets the least loaded member take are moved to
    /// it; where it may take none of the heaviest member's, balancing stops there.
    fn balance(
        &mut self,
        tolerance: f64,
        may_take: &dyn Fn(&PartitionKey, &MemberId) -> bool,
    ) -> Vec<(PartitionKey, MemberId)> {
        let members = self.load_by_member.len();
        if members < 2 {
            return Vec::new();
        }
        let total: f64 = self.load_by_member.values().sum();
        let mean = total / members as f64;
        let largest_weight = self
            .partitions_by_member
            .values()
            .filter_map(|partitions| partitions.last().map(|(weight, _)| weight.0))
            .fold(0.0, f64::max);
        let slack = slack(mean, largest_weight, tolerance);
        // Float sums of weights are not exact: a hair over the bound is within it.
        let epsilon = 1e-9 * mean.max(1.0);
        let tight = tolerance <= 0.0;
        let mut moves = Vec::new();
        // Each move lowers the sum of squared loads, so this ends; the cap only
        // guards against float noise.
        let max_moves = 4 * self
            .partitions_by_member
            .values()
            .map(BTreeSet::len)
            .sum::<usize>();
        while moves.len() < max_moves {
            let (Some((Ordered(low), to)), Some((Ordered(high), from))) =
                (self.by_load.first().cloned(), self.by_load.last().cloned())
            else {
                break;
            };
            let out_of_bound = high > mean + slack + epsilon || low < mean - slack - epsilon;
            if !out_of_bound && !tight {
                break;
            }
            let Some(partitions) = self.partitions_by_member.get(&from) else {
                break;
            };
            // The heaviest partition that does not overshoot (at most half the
            // gap): fewest moves. Failing that, out of the bound, the lightest if
            // it still helps. Within the bound (a tight rebalance), only moves
            // that do not overshoot.
            let half_gap = Ordered((high - low) / 2.0 + epsilon);
            let within_half = partitions
                .iter()
                .rev()
                .find(|(weight, key)| *weight <= half_gap && may_take(key, &to));
            let candidate_opt = match within_half {
                Some(found) => Some(found),
                None if out_of_bound => partitions.iter().find(|(_, key)| may_take(key, &to)),
                None => None,
            }
            .filter(|(weight, _)| low + weight.0 < high - epsilon)
            .map(|(weight, key)| (weight.0, key.clone()));
            let Some((weight, key)) = candidate_opt else {
                break;
            };
            self.remove(&from, &key, weight);
            self.add(&to, &key, weight);
            moves.push((key, to));
        }
        moves
    }
}

#[cfg(test)]
mod tests;
