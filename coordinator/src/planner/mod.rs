#![doc = include_str!("README.md")]

use std::collections::{BTreeMap, BTreeSet};

use kmirror_common::schema::Assignment;
use kmirror_common::{Epoch, MemberId, PartitionKey};

/// A source partition that should be mirrored, with the shape its assignment carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPartition {
    pub key: PartitionKey,
    pub dest_topic: String,
    pub dest_partitions: i32,
    pub source_partitions: i32,
}

/// Everything the plan depends on.
#[derive(Debug, Clone)]
pub struct Problem {
    pub partitions: Vec<WantedPartition>,
    pub live_fetchers: BTreeSet<MemberId>,
    pub live_writers: BTreeSet<MemberId>,
    /// Epoch of every assignment this plan creates or changes.
    pub epoch: Epoch,
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

/// Plans the assignments (see the module documentation for the objectives).
pub fn plan(problem: &Problem, previous: &BTreeMap<PartitionKey, Assignment>) -> Plan {
    let mut fetcher_load = Load::new(&problem.live_fetchers);
    let mut writer_load = Load::new(&problem.live_writers);
    let mut wanted: Vec<&WantedPartition> = problem.partitions.iter().collect();
    wanted.sort_by(|left, right| left.key.cmp(&right.key));
    wanted.dedup_by(|left, right| left.key == right.key);

    let mut outcome = Plan::default();
    let mut to_place = Vec::new();
    // Kept assignments are counted first so orphans are placed on top of the real
    // load, not on top of a half-built one.
    for partition in &wanted {
        match previous.get(&partition.key) {
            Some(assignment)
                if fetcher_load.is_live(&assignment.fetcher)
                    && writer_load.is_live(&assignment.writer)
                    && same_shape(assignment, partition) =>
            {
                fetcher_load.add(&assignment.fetcher);
                writer_load.add(&assignment.writer);
                outcome
                    .assignments
                    .insert(partition.key.clone(), assignment.clone());
            }
            _ => to_place.push(*partition),
        }
    }

    for partition in to_place {
        let previous_opt = previous.get(&partition.key);
        let fetcher_opt = previous_opt
            .map(|assignment| &assignment.fetcher)
            .filter(|fetcher| fetcher_load.is_live(fetcher))
            .cloned()
            .or_else(|| fetcher_load.least_loaded());
        let writer_opt = previous_opt
            .map(|assignment| &assignment.writer)
            .filter(|writer| writer_load.is_live(writer))
            .cloned()
            .or_else(|| writer_load.least_loaded());
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
        fetcher_load.add(&fetcher);
        writer_load.add(&writer);
        outcome.assignments.insert(
            partition.key.clone(),
            Assignment {
                fetcher,
                writer,
                epoch: problem.epoch,
                dest_topic: partition.dest_topic.clone(),
                dest_partitions: partition.dest_partitions,
                source_partitions: partition.source_partitions,
            },
        );
        outcome.changed.insert(partition.key.clone());
    }

    for key in previous.keys() {
        if !outcome.assignments.contains_key(key) {
            outcome.removed.insert(key.clone());
        }
    }
    outcome
}

fn same_shape(assignment: &Assignment, partition: &WantedPartition) -> bool {
    assignment.dest_topic == partition.dest_topic
        && assignment.dest_partitions == partition.dest_partitions
        && assignment.source_partitions == partition.source_partitions
}

/// Partitions per live member of one role.
struct Load {
    partitions_by_member: BTreeMap<MemberId, usize>,
}

impl Load {
    fn new(live_members: &BTreeSet<MemberId>) -> Self {
        Self {
            partitions_by_member: live_members.iter().map(|id| (id.clone(), 0)).collect(),
        }
    }

    fn is_live(&self, member: &MemberId) -> bool {
        self.partitions_by_member.contains_key(member)
    }

    fn add(&mut self, member: &MemberId) {
        if let Some(count) = self.partitions_by_member.get_mut(member) {
            *count += 1;
        }
    }

    /// The member with the fewest partitions; the smallest id among equals.
    fn least_loaded(&self) -> Option<MemberId> {
        self.partitions_by_member
            .iter()
            .min_by(|(left_id, left_count), (right_id, right_count)| {
                left_count.cmp(right_count).then(left_id.cmp(right_id))
            })
            .map(|(id, _)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::FlowName;

    fn member(name: &str) -> MemberId {
        MemberId::new(name).unwrap()
    }

    fn members(names: &[&str]) -> BTreeSet<MemberId> {
        names.iter().map(|name| member(name)).collect()
    }

    fn topic_partitions(flow: &str, topic: &str, count: i32) -> Vec<WantedPartition> {
        (0..count)
            .map(|partition| WantedPartition {
                key: PartitionKey::new(FlowName::new(flow).unwrap(), topic, partition),
                dest_topic: topic.to_string(),
                dest_partitions: count,
                source_partitions: count,
            })
            .collect()
    }

    fn problem(
        partitions: Vec<WantedPartition>,
        fetchers: &[&str],
        writers: &[&str],
        epoch: u64,
    ) -> Problem {
        Problem {
            partitions,
            live_fetchers: members(fetchers),
            live_writers: members(writers),
            epoch: Epoch(epoch),
        }
    }

    fn load_of(plan: &Plan, pick: impl Fn(&Assignment) -> &MemberId) -> BTreeMap<MemberId, usize> {
        let mut load = BTreeMap::new();
        for assignment in plan.assignments.values() {
            *load.entry(pick(assignment).clone()).or_insert(0) += 1;
        }
        load
    }

    fn assert_single_live_owner(problem: &Problem, plan: &Plan) {
        for partition in &problem.partitions {
            let assignment = plan
                .assignments
                .get(&partition.key)
                .unwrap_or_else(|| panic!("{} is not assigned", partition.key));
            assert!(problem.live_fetchers.contains(&assignment.fetcher));
            assert!(problem.live_writers.contains(&assignment.writer));
        }
        assert_eq!(plan.assignments.len(), problem.partitions.len());
    }

    #[test]
    fn every_partition_gets_exactly_one_live_fetcher_and_writer() {
        let mut partitions = topic_partitions("dr", "orders", 8);
        partitions.extend(topic_partitions("dr", "payments", 3));
        let problem = problem(partitions, &["f1", "f2", "f3"], &["w1", "w2"], 10);
        let plan = plan(&problem, &BTreeMap::new());
        assert_single_live_owner(&problem, &plan);
        assert_eq!(plan.changed.len(), 11);
        assert!(plan.removed.is_empty());
        assert!(plan.assignments.values().all(|a| a.epoch == Epoch(10)));
    }

    #[test]
    fn a_fresh_plan_is_balanced() {
        let problem = problem(
            topic_partitions("dr", "orders", 10),
            &["f1", "f2", "f3"],
            &["w1", "w2"],
            1,
        );
        let plan = plan(&problem, &BTreeMap::new());
        let fetcher_load = load_of(&plan, |a| &a.fetcher);
        let writer_load = load_of(&plan, |a| &a.writer);
        assert_eq!(
            fetcher_load.values().copied().collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
        assert_eq!(
            writer_load.values().copied().collect::<Vec<_>>(),
            vec![5, 5]
        );
    }

    #[test]
    fn an_unchanged_problem_moves_nothing() {
        let first_problem = problem(
            topic_partitions("dr", "orders", 8),
            &["f1", "f2"],
            &["w1", "w2"],
            5,
        );
        let first = plan(&first_problem, &BTreeMap::new());
        let mut second_problem = first_problem.clone();
        second_problem.epoch = Epoch(9);
        let second = plan(&second_problem, &first.assignments);
        assert!(second.changed.is_empty());
        assert!(second.removed.is_empty());
        assert_eq!(second.assignments, first.assignments);
    }

    #[test]
    fn losing_a_fetcher_moves_only_its_partitions_and_spreads_them() {
        let first = plan(
            &problem(
                topic_partitions("dr", "orders", 12),
                &["f1", "f2", "f3"],
                &["w1"],
                5,
            ),
            &BTreeMap::new(),
        );
        let survivors_problem = problem(
            topic_partitions("dr", "orders", 12),
            &["f1", "f3"],
            &["w1"],
            9,
        );
        let second = plan(&survivors_problem, &first.assignments);
        assert_single_live_owner(&survivors_problem, &second);
        for (key, before) in &first.assignments {
            let after = &second.assignments[key];
            if before.fetcher == member("f2") {
                assert!(second.changed.contains(key));
                assert_eq!(after.epoch, Epoch(9));
                assert_eq!(after.writer, before.writer);
            } else {
                assert_eq!(after, before, "{key} moved although its fetcher lives");
            }
        }
        let fetcher_load = load_of(&second, |a| &a.fetcher);
        assert_eq!(
            fetcher_load.values().copied().collect::<Vec<_>>(),
            vec![6, 6]
        );
    }

    #[test]
    fn losing_a_writer_keeps_the_fetchers() {
        let first = plan(
            &problem(
                topic_partitions("dr", "orders", 6),
                &["f1", "f2"],
                &["w1", "w2"],
                5,
            ),
            &BTreeMap::new(),
        );
        let second = plan(
            &problem(
                topic_partitions("dr", "orders", 6),
                &["f1", "f2"],
                &["w2"],
                9,
            ),
            &first.assignments,
        );
        for (key, before) in &first.assignments {
            let after = &second.assignments[key];
            assert_eq!(after.fetcher, before.fetcher);
            assert_eq!(after.writer, member("w2"));
            assert_eq!(second.changed.contains(key), before.writer == member("w1"));
        }
    }

    #[test]
    fn a_grown_source_topic_changes_the_shape_but_keeps_the_members() {
        let first = plan(
            &problem(
                topic_partitions("dr", "orders", 2),
                &["f1", "f2"],
                &["w1", "w2"],
                5,
            ),
            &BTreeMap::new(),
        );
        let grown_problem = problem(
            topic_partitions("dr", "orders", 4),
            &["f1", "f2"],
            &["w1", "w2"],
            9,
        );
        let second = plan(&grown_problem, &first.assignments);
        assert_single_live_owner(&grown_problem, &second);
        assert_eq!(second.changed.len(), 4);
        for (key, before) in &first.assignments {
            let after = &second.assignments[key];
            assert_eq!(
                (&after.fetcher, &after.writer),
                (&before.fetcher, &before.writer)
            );
            assert_eq!(after.source_partitions, 4);
            assert_eq!(after.epoch, Epoch(9));
        }
        // The two new partitions go where the load is lowest: one to each fetcher.
        let fetcher_load = load_of(&second, |a| &a.fetcher);
        assert_eq!(
            fetcher_load.values().copied().collect::<Vec<_>>(),
            vec![2, 2]
        );
    }

    #[test]
    fn partitions_no_longer_wanted_are_removed() {
        let mut partitions = topic_partitions("dr", "orders", 2);
        partitions.extend(topic_partitions("dr", "payments", 2));
        let first = plan(&problem(partitions, &["f1"], &["w1"], 5), &BTreeMap::new());
        let second = plan(
            &problem(topic_partitions("dr", "orders", 2), &["f1"], &["w1"], 9),
            &first.assignments,
        );
        assert!(second.changed.is_empty());
        let removed: Vec<String> = second.removed.iter().map(|key| key.to_string()).collect();
        assert_eq!(removed, vec!["dr:payments/0", "dr:payments/1"]);
    }

    #[test]
    fn without_live_writers_new_partitions_wait_and_existing_ones_keep_their_owner() {
        let first = plan(
            &problem(topic_partitions("dr", "orders", 3), &["f1"], &["w1"], 5),
            &BTreeMap::new(),
        );
        let second = plan(
            &problem(topic_partitions("dr", "orders", 4), &["f1"], &[], 9),
            &first.assignments,
        );
        assert_eq!(second.assignments, first.assignments, "kept, not removed");
        assert_eq!(second.unassigned.len(), 4);
        assert!(second.removed.is_empty() && second.changed.is_empty());
    }

    #[test]
    fn a_new_member_receives_new_partitions_first() {
        let first = plan(
            &problem(topic_partitions("dr", "orders", 4), &["f1"], &["w1"], 5),
            &BTreeMap::new(),
        );
        let mut partitions = topic_partitions("dr", "orders", 4);
        partitions.extend(topic_partitions("dr", "payments", 2));
        let second = plan(
            &problem(partitions, &["f1", "f2"], &["w1"], 9),
            &first.assignments,
        );
        assert_eq!(second.changed.len(), 2);
        for key in &second.changed {
            assert_eq!(key.topic, "payments");
            assert_eq!(second.assignments[key].fetcher, member("f2"));
        }
    }

    /// A small deterministic generator, so the randomized tests need no extra crate
    /// and fail the same way every time.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    #[test]
    fn random_membership_changes_keep_single_ownership_and_stickiness() {
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let all_fetchers = ["f1", "f2", "f3", "f4", "f5"];
        let all_writers = ["w1", "w2", "w3"];
        let mut previous = BTreeMap::new();
        for round in 0..300u64 {
            let fetchers: Vec<&str> = all_fetchers
                .iter()
                .copied()
                .filter(|_| random.next(4) != 0)
                .collect();
            let writers: Vec<&str> = all_writers
                .iter()
                .copied()
                .filter(|_| random.next(4) != 0)
                .collect();
            let mut partitions = topic_partitions("a", "t1", 1 + random.next(12) as i32);
            partitions.extend(topic_partitions("b", "t2", random.next(6) as i32));
            let problem = problem(partitions, &fetchers, &writers, round + 1);
            let outcome = plan(&problem, &previous);
            if fetchers.is_empty() || writers.is_empty() {
                // Nobody to move to: whatever was assigned stays as it was.
                for (key, assignment) in &outcome.assignments {
                    assert_eq!(previous.get(key), Some(assignment));
                }
                assert!(outcome.changed.is_empty());
            } else {
                assert_single_live_owner(&problem, &outcome);
            }
            // Stickiness: an assignment with live members and the same shape is kept.
            for partition in &problem.partitions {
                if let Some(before) = previous.get(&partition.key) {
                    if problem.live_fetchers.contains(&before.fetcher)
                        && problem.live_writers.contains(&before.writer)
                        && same_shape(before, partition)
                    {
                        assert_eq!(outcome.assignments.get(&partition.key), Some(before));
                        assert!(!outcome.changed.contains(&partition.key));
                    }
                }
            }
            // The diff describes exactly how to get from previous to the plan.
            let mut applied = previous.clone();
            for key in &outcome.removed {
                applied.remove(key);
            }
            for key in &outcome.changed {
                applied.insert(key.clone(), outcome.assignments[key].clone());
            }
            assert_eq!(applied, outcome.assignments);
            // Planning again against the result changes nothing.
            let again = plan(&problem, &outcome.assignments);
            assert!(again.changed.is_empty() && again.removed.is_empty());
            previous = outcome.assignments;
        }
    }
}
