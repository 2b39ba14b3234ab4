use super::*;
use kmirror_common::FlowName;
use proptest::prelude::*;

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
            bytes_per_sec: 0.0,
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
        writers_avoided: BTreeMap::new(),
        epoch: Epoch(epoch),
        tolerance: DEFAULT_TOLERANCE,
    }
}

fn load_of(plan: &Plan, pick: impl Fn(&Assignment) -> &MemberId) -> BTreeMap<MemberId, usize> {
    let mut load = BTreeMap::new();
    for assignment in plan.assignments.values() {
        *load.entry(pick(assignment).clone()).or_insert(0) += 1;
    }
    load
}

/// Weighted load per live member of a role (members without partitions at 0).
fn weighted_load(problem: &Problem, plan: &Plan, role: Role) -> BTreeMap<MemberId, f64> {
    let partitions: Vec<&WantedPartition> = problem.partitions.iter().collect();
    let weights = partition_weights(&partitions);
    let live = match role {
        Role::Writer => &problem.live_writers,
        _ => &problem.live_fetchers,
    };
    let mut load: BTreeMap<MemberId, f64> = live.iter().map(|id| (id.clone(), 0.0)).collect();
    for (key, assignment) in &plan.assignments {
        let owner = match role {
            Role::Writer => &assignment.writer,
            _ => &assignment.fetcher,
        };
        if let Some(entry) = load.get_mut(owner) {
            *entry += weights.get(key).copied().unwrap_or(1.0);
        }
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

fn assert_within_bound(problem: &Problem, plan: &Plan) {
    let partitions: Vec<&WantedPartition> = problem.partitions.iter().collect();
    let weights = partition_weights(&partitions);
    let largest = weights.values().copied().fold(0.0, f64::max);
    for role in [Role::Fetcher, Role::Writer] {
        let load = weighted_load(problem, plan, role);
        if load.len() < 2 {
            continue;
        }
        let mean = load.values().sum::<f64>() / load.len() as f64;
        let bound = slack(mean, largest, problem.tolerance) + 1e-6;
        for (member, value) in &load {
            assert!(
                (value - mean).abs() <= bound,
                "{role} {member} carries {value}, mean {mean}, bound {bound}: {load:?}"
            );
        }
    }
}

/// Applying `changed` and `removed` to `previous` gives the plan.
fn assert_diff_is_exact(previous: &BTreeMap<PartitionKey, Assignment>, plan: &Plan) {
    let mut applied = previous.clone();
    for key in &plan.removed {
        applied.remove(key);
    }
    for key in &plan.changed {
        applied.insert(key.clone(), plan.assignments[key].clone());
    }
    assert_eq!(&applied, &plan.assignments);
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
    let mut fetcher_counts: Vec<usize> = fetcher_load.values().copied().collect();
    fetcher_counts.sort();
    assert_eq!(fetcher_counts, vec![3, 3, 4]);
    assert_eq!(
        writer_load.values().copied().collect::<Vec<_>>(),
        vec![5, 5]
    );
}

#[test]
fn load_is_balanced_by_measured_bytes_per_second() {
    // Two hot partitions and six idle ones over two fetchers: the hot ones go to
    // different fetchers, and the idle ones even out the rest.
    let mut partitions = topic_partitions("dr", "orders", 8);
    partitions[0].bytes_per_sec = 1_000_000.0;
    partitions[1].bytes_per_sec = 1_000_000.0;
    let problem = problem(partitions, &["f1", "f2"], &["w1"], 1);
    let plan = plan(&problem, &BTreeMap::new());
    let hot_0 = &plan.assignments[&problem.partitions[0].key].fetcher;
    let hot_1 = &plan.assignments[&problem.partitions[1].key].fetcher;
    assert_ne!(hot_0, hot_1);
    assert_within_bound(&problem, &plan);
}

#[test]
fn a_member_that_gets_hot_sheds_partitions_to_the_bound() {
    let partitions = topic_partitions("dr", "orders", 12);
    let first_problem = problem(partitions.clone(), &["f1", "f2", "f3"], &["w1"], 1);
    let first = plan(&first_problem, &BTreeMap::new());
    // Every partition of f1 becomes ten times as busy as the others.
    let mut hot = partitions;
    for partition in &mut hot {
        let on_f1 = first.assignments[&partition.key].fetcher == member("f1");
        partition.bytes_per_sec = if on_f1 { 10_000.0 } else { 1_000.0 };
    }
    let hot_problem = problem(hot, &["f1", "f2", "f3"], &["w1"], 2);
    let second = plan(&hot_problem, &first.assignments);
    assert!(!second.changed.is_empty());
    assert_within_bound(&hot_problem, &second);
    assert_diff_is_exact(&first.assignments, &second);
    for key in &second.changed {
        assert_eq!(first.assignments[key].fetcher, member("f1"), "{key}");
    }
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

#[test]
fn a_new_member_takes_only_what_the_bound_requires() {
    // 100 partitions on 4 fetchers (25 each); a fifth joins: mean 20, bound
    // max(1, 2) = 2, so it must reach 18 and nobody else moves more than needed.
    let partitions = topic_partitions("dr", "orders", 100);
    let first = plan(
        &problem(partitions.clone(), &["f1", "f2", "f3", "f4"], &["w1"], 1),
        &BTreeMap::new(),
    );
    let grown = problem(partitions, &["f1", "f2", "f3", "f4", "f5"], &["w1"], 2);
    let second = plan(&grown, &first.assignments);
    let moves = second.moves(&first.assignments);
    assert_eq!(moves.len(), 18, "{moves:?}");
    assert!(moves.iter().all(|movement| movement.to == member("f5")));
    assert_within_bound(&grown, &second);
}

#[test]
fn a_tight_rebalance_evens_out_what_the_tolerance_allowed() {
    let partitions = topic_partitions("dr", "orders", 100);
    let first = plan(
        &problem(partitions.clone(), &["f1", "f2", "f3", "f4"], &["w1"], 1),
        &BTreeMap::new(),
    );
    let grown = problem(partitions, &["f1", "f2", "f3", "f4", "f5"], &["w1"], 2);
    let second = plan(&grown, &first.assignments);
    let mut tight = grown.clone();
    tight.tolerance = 0.0;
    tight.epoch = Epoch(3);
    let third = plan(&tight, &second.assignments);
    let counts = load_of(&third, |a| &a.fetcher);
    assert!(counts.values().all(|count| *count == 20), "{counts:?}");
    assert_eq!(third.moves(&second.assignments).len(), 2);
}

/// Partitions of two topics (`a:t1` with 1-40, `b:t2` with 0-19), each with a
/// measured rate (a quarter of them idle) when `rated`.
fn partitions_strategy(rated: bool) -> impl Strategy<Value = Vec<WantedPartition>> {
    let rate = prop_oneof![1 => Just(0.0), 3 => (0u32..5_000).prop_map(f64::from)];
    (1..=40i32, 0..20i32, prop::collection::vec(rate, 60)).prop_map(
        move |(first, second, rates)| {
            let mut partitions = topic_partitions("a", "t1", first);
            partitions.extend(topic_partitions("b", "t2", second));
            if rated {
                for (partition, rate) in partitions.iter_mut().zip(rates) {
                    partition.bytes_per_sec = rate;
                }
            }
            partitions
        },
    )
}

/// One round of a changing fleet: which of five fetchers and three writers live,
/// and the partitions to place.
fn round_strategy() -> impl Strategy<Value = (Vec<bool>, Vec<bool>, Vec<WantedPartition>)> {
    let live = |count| prop::collection::vec(prop::bool::weighted(0.75), count);
    (any::<bool>(), live(5), live(3)).prop_flat_map(move |(rated, fetchers, writers)| {
        (Just(fetchers), Just(writers), partitions_strategy(rated))
    })
}

fn names_where<'a>(names: &[&'a str], live: &[bool]) -> Vec<&'a str> {
    names
        .iter()
        .zip(live)
        .filter(|(_, live)| **live)
        .map(|(name, _)| *name)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_membership_changes_keep_single_ownership_stickiness_and_the_bound(
        rounds in prop::collection::vec(round_strategy(), 1..12)
    ) {
        let all_fetchers = ["f1", "f2", "f3", "f4", "f5"];
        let all_writers = ["w1", "w2", "w3"];
        let mut previous = BTreeMap::new();
        for (round, (live_fetchers, live_writers, partitions)) in rounds.into_iter().enumerate() {
            let fetchers = names_where(&all_fetchers, &live_fetchers);
            let writers = names_where(&all_writers, &live_writers);
            let problem = problem(partitions, &fetchers, &writers, round as u64 + 1);
            let outcome = plan(&problem, &previous);
            if fetchers.is_empty() || writers.is_empty() {
                // Nobody to move to: whatever was assigned stays as it was.
                for (key, assignment) in &outcome.assignments {
                    prop_assert_eq!(previous.get(key), Some(assignment));
                }
                prop_assert!(outcome.changed.is_empty());
            } else {
                assert_single_live_owner(&problem, &outcome);
                assert_within_bound(&problem, &outcome);
            }
            assert_diff_is_exact(&previous, &outcome);
            // Planning again against the result changes nothing.
            let again = plan(&problem, &outcome.assignments);
            prop_assert!(
                again.changed.is_empty() && again.removed.is_empty(),
                "round {}: planning the same problem again moved {:?}",
                round,
                again.changed
            );
            previous = outcome.assignments;
        }
    }

    #[test]
    fn losing_a_member_moves_only_that_members_partitions(
        member_count in 2..8usize,
        lost_index in 0..8usize,
        partitions in any::<bool>().prop_flat_map(partitions_strategy),
    ) {
        let names: Vec<String> = (0..member_count).map(|index| format!("f{index}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let first_problem = problem(partitions.clone(), &name_refs, &["w1", "w2"], 1);
        let first = plan(&first_problem, &BTreeMap::new());
        let lost = names[lost_index % member_count].clone();
        let survivors: Vec<&str> = name_refs
            .iter()
            .copied()
            .filter(|name| *name != lost)
            .collect();
        let second_problem = problem(partitions, &survivors, &["w1", "w2"], 2);
        let second = plan(&second_problem, &first.assignments);
        assert_single_live_owner(&second_problem, &second);
        for key in &second.changed {
            prop_assert_eq!(
                first.assignments[key].fetcher.as_str(),
                lost.as_str(),
                "{} moved although its fetcher lives",
                key
            );
        }
        assert_within_bound(&second_problem, &second);
    }

    #[test]
    fn adding_a_member_moves_only_what_the_bound_requires(
        member_count in 1..7usize,
        partitions in partitions_strategy(false),
    ) {
        let names: Vec<String> = (0..member_count).map(|index| format!("f{index}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let first = plan(
            &problem(partitions.clone(), &name_refs, &["w1"], 1),
            &BTreeMap::new(),
        );
        let mut grown_names = name_refs.clone();
        grown_names.push("new");
        let grown = problem(partitions, &grown_names, &["w1"], 2);
        let second = plan(&grown, &first.assignments);
        // Units (partitions) each member is outside the bound by, in the grown fleet.
        let before = weighted_load(&grown, &first, Role::Fetcher);
        let mean = before.values().sum::<f64>() / before.len() as f64;
        let bound = slack(mean, 1.0, grown.tolerance);
        let required: f64 = before
            .values()
            .map(|load| {
                (load - (mean + bound)).max(0.0).ceil() + ((mean - bound) - load).max(0.0).ceil()
            })
            .sum();
        let moves = second.moves(&first.assignments);
        prop_assert!(
            moves.len() as f64 <= required,
            "{} moves where the bound requires {}",
            moves.len(),
            required
        );
        assert_within_bound(&grown, &second);
    }
}
