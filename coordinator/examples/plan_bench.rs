//! How long the planner takes at fleet scale: 10 000 partitions over 100 fetchers
//! and 100 writers, with measured rates, for the situations a reconcile round
//! meets. Run with `cargo run --release -p kmirror-coordinator --example plan_bench`
//! (a debug build is several times slower).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kmirror_common::{Epoch, FlowName, MemberId};
use kmirror_coordinator::planner::{plan, Problem, WantedPartition, DEFAULT_TOLERANCE};

const PARTITIONS: usize = 10_000;
const MEMBERS: usize = 100;
const ROUNDS: u32 = 5;

fn members(role: &str, count: usize) -> BTreeSet<MemberId> {
    (0..count)
        .map(|index| MemberId::new(format!("{role}-{index:03}")).expect("valid id"))
        .collect()
}

fn partitions() -> Vec<WantedPartition> {
    let flow = FlowName::new("bench").expect("valid flow name");
    // 100 topics of 100 partitions; rates spread over three orders of magnitude,
    // a quarter of the partitions idle.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PARTITIONS)
        .map(|index| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let topic = format!("topic-{:03}", index / 100);
            WantedPartition {
                key: kmirror_common::PartitionKey::new(
                    flow.clone(),
                    topic.clone(),
                    (index % 100) as i32,
                ),
                dest_topic: topic,
                dest_partitions: 100,
                source_partitions: 100,
                bytes_per_sec: match seed % 4 {
                    0 => 0.0,
                    _ => (seed % 1_000_000) as f64,
                },
            }
        })
        .collect()
}

fn time(label: &str, mut run: impl FnMut() -> usize) {
    let mut best = Duration::MAX;
    let mut total = Duration::ZERO;
    let mut changed = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        changed = run();
        let elapsed = started.elapsed();
        best = best.min(elapsed);
        total += elapsed;
    }
    println!(
        "{label:<44} best {:>8.1} ms  mean {:>8.1} ms  changed {changed}",
        best.as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0 / f64::from(ROUNDS),
    );
}

fn main() {
    let problem = Problem {
        partitions: partitions(),
        live_fetchers: members("fetcher", MEMBERS),
        live_writers: members("writer", MEMBERS),
        writers_avoided: BTreeMap::new(),
        epoch: Epoch(1),
        tolerance: DEFAULT_TOLERANCE,
    };
    println!(
        "planning {PARTITIONS} partitions over {MEMBERS} fetchers and {MEMBERS} writers ({ROUNDS} runs each)"
    );
    time("fresh plan (nothing assigned)", || {
        plan(&problem, &BTreeMap::new()).changed.len()
    });
    let first = plan(&problem, &BTreeMap::new());
    let mut again = problem.clone();
    again.epoch = Epoch(2);
    time("unchanged problem (steady state)", || {
        plan(&again, &first.assignments).changed.len()
    });
    let mut lost = again.clone();
    let gone = lost.live_fetchers.iter().next().cloned().expect("members");
    lost.live_fetchers.remove(&gone);
    time("one fetcher lost", || {
        plan(&lost, &first.assignments).changed.len()
    });
    let mut grown = again.clone();
    grown
        .live_fetchers
        .insert(MemberId::new("fetcher-new").expect("valid id"));
    time("one fetcher added", || {
        plan(&grown, &first.assignments).changed.len()
    });
    let mut tight = again.clone();
    tight.tolerance = 0.0;
    time("tight rebalance (tolerance 0)", || {
        plan(&tight, &first.assignments).changed.len()
    });
}
