//! The leader's reconcile loop: from flows, clusters and live members to destination
//! topics, partition assignments and flow states in etcd.
//!
//! Each round reads the control state at one etcd revision, looks at the Kafka
//! clusters of every flow (concurrently, each flow on its own so one failing flow
//! does not hold up the others), plans the assignments with the pure planner and
//! writes the difference in transactions guarded by the leadership key. A round
//! runs every refresh interval and, debounced, soon after a change under `flows/`,
//! `clusters/` or `members/`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Client, DeleteOptions, LeaderKey, TxnOp, WatchOptions};
use futures::future::join_all;
use kmirror_common::schema::{
    encode, Assignment, Checkpoint, ClusterSpec, FlowPhase, FlowSpec, FlowState, OffsetRange,
    StartPosition, RELEASE_TIMEOUT_MS,
};
use kmirror_common::{now_ms, ClusterName, Epoch, FlowName, Keys, MemberId, PartitionKey, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::CoordinatorError;
use crate::kafka::{ClusterAdmin, KafkaClients, KafkaSide, TopicToCreate};
use crate::planner::{plan, Problem, WantedPartition, DEFAULT_TOLERANCE};
use crate::store::{fenced_write, read_snapshot, Sections, Snapshot};
use crate::topic_filter::TopicFilter;

/// Runs reconcile rounds while this coordinator leads.
pub struct Reconciler {
    client: Client,
    keys: Keys,
    kafka: KafkaClients,
    leader: LeaderKey,
    refresh_interval: Duration,
    debounce: Duration,
    /// For this long after taking the lead, members named by existing assignments
    /// count as live even when not registered: a fleet restarting together keeps
    /// its assignments (and epochs) instead of having them moved while members
    /// come back.
    member_grace: Duration,
    leading_since: tokio::time::Instant,
    /// The last config sync failure per flow and topic, so each is logged once.
    config_sync_failures: BTreeMap<(FlowName, String), String>,
}

/// What one round did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundSummary {
    pub flows: usize,
    pub partitions: usize,
    pub changed: usize,
    pub removed: usize,
    pub deleted_flows: Vec<FlowName>,
    pub created_topics: Vec<String>,
}

impl Reconciler {
    pub fn new(
        client: Client,
        keys: Keys,
        kafka: KafkaClients,
        leader: LeaderKey,
        refresh_interval: Duration,
        debounce: Duration,
        member_grace: Duration,
    ) -> Self {
        Self {
            client,
            keys,
            kafka,
            leader,
            refresh_interval,
            debounce,
            member_grace,
            leading_since: tokio::time::Instant::now(),
            config_sync_failures: BTreeMap::new(),
        }
    }

    /// Reconciles until cancelled (`Ok`) or deposed (`Err(Deposed)`).
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), CoordinatorError> {
        let (changed_tx, mut changed_rx) = mpsc::channel(1);
        let watcher = ChangeWatcher {
            client: self.client.clone(),
            keys: self.keys.clone(),
            changed_tx,
        };
        let watcher_cancel = cancel.child_token();
        let _stop_watcher = watcher_cancel.clone().drop_guard();
        tokio::spawn(watcher.run(watcher_cancel));

        loop {
            let round = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                round = crate::telemetry::reconcile_round(self.reconcile_once()) => round,
            };
            match round {
                Ok(summary) => {
                    if summary.changed > 0
                        || summary.removed > 0
                        || !summary.deleted_flows.is_empty()
                    {
                        info!(
                            flows = summary.flows,
                            partitions = summary.partitions,
                            changed = summary.changed,
                            removed = summary.removed,
                            deleted_flows = %summary
                                .deleted_flows
                                .iter()
                                .map(FlowName::as_str)
                                .collect::<Vec<_>>()
                                .join(","),
                            "applied assignment changes"
                        );
                    } else {
                        debug!(
                            flows = summary.flows,
                            partitions = summary.partitions,
                            "reconciled, nothing to change"
                        );
                    }
                }
                Err(CoordinatorError::Deposed) => return Err(CoordinatorError::Deposed),
                Err(error) => warn!(%error, "reconcile round failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.refresh_interval) => {}
                Some(()) = changed_rx.recv() => {
                    // Let a burst of changes (a fleet starting, a flow and its
                    // clusters created together) settle into one round.
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.debounce) => {}
                    }
                    while changed_rx.try_recv().is_ok() {}
                }
            }
        }
    }

    /// One round: read, look at Kafka, plan, write.
    pub async fn reconcile_once(&mut self) -> Result<RoundSummary, CoordinatorError> {
        let sections = Sections {
            clusters: true,
            flows: true,
            members: true,
            assignments: true,
            checkpoints: true,
            flow_states: true,
            operator_requests: true,
            ..Sections::default()
        };
        let snapshot = read_snapshot(&mut self.client, &self.keys, sections).await?;
        // Later rounds read later revisions (a round that changes anything writes),
        // so epochs grow across the fleet.
        let epoch = Epoch(snapshot.revision as u64 + 1);
        self.kafka.retain(&snapshot.clusters);

        // Paused and completed flows are not looked at: they want no partition, so
        // the plan removes their assignments (their checkpoints stay).
        let running: Vec<&FlowSpec> = snapshot
            .flows
            .values()
            .filter(|flow| {
                flow_phase(flow, snapshot.flow_states.get(&flow.name)) == FlowPhase::Running
            })
            .collect();
        let discoveries = join_all(running.iter().map(|flow| {
            discover_flow(
                flow,
                &snapshot.clusters,
                &self.kafka,
                &snapshot.assignments,
                snapshot.flow_states.get(&flow.name),
            )
        }))
        .await;

        let mut summary = RoundSummary {
            flows: snapshot.flows.len(),
            ..RoundSummary::default()
        };
        let mut discovered: BTreeMap<FlowName, FlowDiscovery> = BTreeMap::new();
        for (flow, discovery) in running.iter().zip(discoveries) {
            summary
                .created_topics
                .extend(discovery.created_topics.iter().cloned());
            discovered.insert(flow.name.clone(), discovery);
        }

        refuse_shared_dest_topics(
            &running,
            &mut discovered,
            &snapshot.assignments,
            &snapshot.clusters,
            &self.kafka,
        )
        .await;

        // Flows seen for the first time: apply their start position and capture
        // their migration targets before anything of them is assigned.
        let mut operations = Vec::new();
        let mut new_states: BTreeMap<FlowName, FlowState> = BTreeMap::new();
        for flow in &running {
            let previous_state_opt = snapshot.flow_states.get(&flow.name);
            let mut state = previous_state_opt.cloned().unwrap_or_default();
            state.phase = FlowPhase::Running;
            new_states.insert(flow.name.clone(), state);
        }
        let starting: Vec<&FlowSpec> = running
            .iter()
            .copied()
            .filter(|flow| {
                new_states[&flow.name].started_ms.is_none()
                    && discovered
                        .get(&flow.name)
                        .is_some_and(|discovery| discovery.source_listed)
            })
            .collect();
        let starts = join_all(starting.iter().map(|flow| {
            start_flow(
                flow,
                &discovered[&flow.name],
                &snapshot.clusters,
                &self.kafka,
                &snapshot.checkpoints,
                epoch,
            )
        }))
        .await;
        let mut initial_checkpoints: BTreeMap<PartitionKey, Checkpoint> = BTreeMap::new();
        for (flow, start) in starting.iter().zip(starts) {
            let discovery = discovered.get_mut(&flow.name).expect("discovered");
            let state = new_states.get_mut(&flow.name).expect("state");
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
                        operations.push(TxnOp::put(
                            self.keys.checkpoint(&key),
                            encode(&checkpoint),
                            None,
                        ));
                        initial_checkpoints.insert(key, checkpoint);
                    }
                    state.started_ms = Some(now_ms());
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
            let state = new_states.get_mut(&flow.name).expect("state");
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
                    .or_else(|| snapshot.checkpoints.get(key))
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
                state.completed_ms = Some(now_ms());
                discovery.partitions.clear();
            }
        }

        // Topic configs follow the source: a source value that changed since it
        // was last copied is carried over.
        let syncing: Vec<&FlowSpec> = running
            .iter()
            .copied()
            .filter(|flow| {
                flow.config_sync.enabled
                    && new_states[&flow.name].started_ms.is_some()
                    && discovered
                        .get(&flow.name)
                        .is_some_and(|discovery| !discovery.source_configs.is_empty())
            })
            .collect();
        let syncs = join_all(syncing.iter().map(|flow| {
            sync_topic_configs(
                flow,
                &discovered[&flow.name],
                &new_states[&flow.name],
                &snapshot.clusters,
                &self.kafka,
            )
        }))
        .await;
        for (flow, synced) in syncing.iter().zip(syncs) {
            let state = new_states.get_mut(&flow.name).expect("state");
            for (topic, outcome) in synced {
                let failure_key = (flow.name.clone(), topic.clone());
                match outcome {
                    Ok(configs) => {
                        self.config_sync_failures.remove(&failure_key);
                        state.source_configs.insert(topic, configs);
                    }
                    Err(cause) => {
                        if self.config_sync_failures.get(&failure_key) != Some(&cause) {
                            warn!(flow = %flow.name, %topic, error = %cause, "cannot carry topic config changes to the destination");
                            self.config_sync_failures.insert(failure_key, cause);
                        }
                    }
                }
            }
            // Topics no longer mirrored are forgotten.
            let topics: BTreeSet<&String> = discovered[&flow.name].source_configs.keys().collect();
            state
                .source_configs
                .retain(|topic, _| topics.contains(topic) || !discovered[&flow.name].source_listed);
        }

        // Drained members keep nothing and get nothing new.
        let registered = |role: Role| -> BTreeSet<MemberId> {
            snapshot
                .members_of(role)
                .filter(|id| !snapshot.is_drained(role, id))
                .cloned()
                .collect()
        };
        let mut live_fetchers = registered(Role::Fetcher);
        let mut live_writers = registered(Role::Writer);
        let in_grace = self.leading_since.elapsed() < self.member_grace;
        if in_grace {
            for assignment in snapshot.assignments.values() {
                if !snapshot.is_drained(Role::Fetcher, &assignment.fetcher) {
                    live_fetchers.insert(assignment.fetcher.clone());
                }
                if !snapshot.is_drained(Role::Writer, &assignment.writer) {
                    live_writers.insert(assignment.writer.clone());
                }
            }
        }
        let tolerance = if snapshot.rebalance_opt.is_some() {
            0.0
        } else {
            DEFAULT_TOLERANCE
        };
        let now = now_ms();
        // A partition being released is planned again only once its fetcher let
        // go of it: its final checkpoint is where the next owner starts.
        let releasing = |key: &PartitionKey| {
            snapshot
                .assignments
                .get(key)
                .is_some_and(Assignment::is_releasing)
        };
        let mut partitions: Vec<WantedPartition> = discovered
            .values()
            .flat_map(|discovery| discovery.partitions.iter().cloned())
            .filter(|partition| !releasing(&partition.key))
            .collect();
        // Measured rates drive an explicit rebalance only. Every move makes the new
        // owner resend what the old one had in flight, so routine rounds balance
        // by partition count, which stays put while rates fluctuate: partitions
        // move when members come and go, not with the traffic.
        if snapshot.rebalance_opt.is_some() {
            for partition in &mut partitions {
                partition.bytes_per_sec =
                    current_rate(snapshot.checkpoints.get(&partition.key), now);
            }
        }
        let problem = Problem {
            partitions,
            live_fetchers,
            live_writers,
            epoch,
            tolerance,
        };
        summary.partitions = problem.partitions.len();
        let previous: BTreeMap<PartitionKey, Assignment> = snapshot
            .assignments
            .iter()
            .filter(|(key, assignment)| {
                snapshot.flows.contains_key(&key.flow) && !assignment.is_releasing()
            })
            .map(|(key, assignment)| (key.clone(), assignment.clone()))
            .collect();
        let outcome = plan(&problem, &previous);
        summary.changed = outcome.changed.len();
        summary.removed = outcome.removed.len();
        if snapshot.rebalance_opt.is_some() {
            let moves = outcome.moves(&previous);
            info!(
                moves = moves.len(),
                "rebalanced running partitions on request"
            );
            operations.push(TxnOp::delete(self.keys.rebalance_request(), None));
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

        for key in &outcome.changed {
            operations.push(TxnOp::put(
                self.keys.assignment(key),
                encode(&outcome.assignments[key]),
                None,
            ));
        }
        let fetcher_registered =
            |id: &MemberId| snapshot.members.contains_key(&(Role::Fetcher, id.clone()));
        for step in release_steps(
            &snapshot.assignments,
            &outcome.removed,
            fetcher_registered,
            now,
        ) {
            match step {
                ReleaseStep::Release(key, assignment) => {
                    debug!(partition = %key, fetcher = %assignment.fetcher, "asking the fetcher to release the partition");
                    operations.push(TxnOp::put(
                        self.keys.assignment(&key),
                        encode(&assignment),
                        None,
                    ));
                }
                ReleaseStep::Delete(key, reason) => {
                    if let ReleaseReason::TimedOut = reason {
                        warn!(partition = %key, "the fetcher did not release the partition in time; unassigning it");
                    }
                    operations.push(TxnOp::delete(self.keys.assignment(&key), None));
                }
            }
        }
        for flow in deleted_flows(&snapshot) {
            operations.extend(self.flow_deletion(&flow));
            summary.deleted_flows.push(flow);
        }
        // A drain mark outlives its member only while the member may come back
        // under the same id within the grace.
        if !in_grace {
            for (role, id) in &snapshot.drained {
                if !snapshot.members.contains_key(&(*role, id.clone())) {
                    info!(member = %id, %role, "drained member left the fleet");
                    operations.push(TxnOp::delete(self.keys.drained_member(*role, id), None));
                }
            }
        }

        for flow in snapshot.flows.values() {
            let previous_state_opt = snapshot.flow_states.get(&flow.name);
            let mut state = match new_states.remove(&flow.name) {
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
            state.updated_ms = now_ms();
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
            operations.push(TxnOp::put(
                self.keys.flow_state(&flow.name),
                encode(&state),
                None,
            ));
        }
        fenced_write(&mut self.client, &self.leader, operations).await?;
        Ok(summary)
    }

    /// Everything a deleted flow leaves behind. Assignments go first so fetchers stop
    /// before their checkpoints disappear.
    fn flow_deletion(&self, flow: &FlowName) -> Vec<TxnOp> {
        let prefix_delete = || Some(DeleteOptions::new().with_prefix());
        vec![
            TxnOp::delete(self.keys.flow_assignments(flow), prefix_delete()),
            TxnOp::delete(self.keys.flow_checkpoints(flow), prefix_delete()),
            TxnOp::delete(format!("{}{flow}/", self.keys.errors()), prefix_delete()),
            TxnOp::delete(self.keys.flow_state(flow), None),
        ]
    }
}

/// What becomes of an assignment the plan no longer wants, or of one being
/// released.
#[derive(Debug, Clone, PartialEq)]
enum ReleaseStep {
    /// Ask its fetcher to stop gracefully and give the partition back.
    Release(PartitionKey, Assignment),
    /// Remove it outright.
    Delete(PartitionKey, ReleaseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleaseReason {
    /// No fetcher is there to release it: nothing is in flight.
    FetcherGone,
    /// The fetcher had [`RELEASE_TIMEOUT_MS`] and did not.
    TimedOut,
}

/// Unwanted partitions are released by their fetcher (final checkpoint, then it
/// deletes the assignment) rather than taken away, which would drop what it has
/// in flight and leave it unrecorded; an assignment whose fetcher is gone, or that
/// was not released in time, is deleted.
fn release_steps(
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

fn unassignable_reason(problem: &Problem, count: usize) -> String {
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
fn deleted_flows(snapshot: &Snapshot) -> BTreeSet<FlowName> {
    snapshot
        .assignments
        .keys()
        .map(|key| &key.flow)
        .chain(snapshot.flow_states.keys())
        .filter(|flow| !snapshot.flows.contains_key(*flow))
        .cloned()
        .collect()
}

/// What a round learned about one flow.
#[derive(Debug, Clone, Default)]
struct FlowDiscovery {
    partitions: Vec<WantedPartition>,
    /// Source topics the flow mirrors.
    topics: Vec<String>,
    /// Why (part of) the flow cannot run.
    errors: Vec<String>,
    created_topics: Vec<String>,
    /// Whether both clusters answered and the flow's topics are known this round.
    source_listed: bool,
    /// Matching source topics with complete metadata, and their partition counts.
    matched: BTreeMap<String, i32>,
    /// Configs of matching source topics that the flow copies (its config sync
    /// exclusions left out), where they could be read.
    source_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Source topics whose destination topic existed before this round.
    dest_existed: BTreeSet<String>,
}

/// Looks at a flow's clusters: which source topics match, whether their destination
/// topics exist (creating or growing them), and which partitions to mirror. Where a
/// cluster cannot be looked at, the previous assignments are carried over unchanged
/// (the fetchers report their own errors), so a blip never stops mirroring.
async fn discover_flow(
    flow: &FlowSpec,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
    all_previous: &BTreeMap<PartitionKey, Assignment>,
    previous_state_opt: Option<&FlowState>,
) -> FlowDiscovery {
    let previous: BTreeMap<&PartitionKey, &Assignment> = all_previous
        .iter()
        .filter(|(key, _)| key.flow == flow.name)
        .collect();
    let carry_all = |error: String| FlowDiscovery {
        partitions: previous
            .iter()
            .map(|(key, assignment)| carried(key, assignment))
            .collect(),
        topics: previous_state_opt
            .map(|state| state.topics.clone())
            .unwrap_or_default(),
        errors: vec![error],
        ..FlowDiscovery::default()
    };

    let Some(source_spec) = clusters.get(&flow.source_cluster) else {
        return carry_all(format!(
            "source cluster {} is not defined",
            flow.source_cluster
        ));
    };
    let Some(dest_spec) = clusters.get(&flow.dest_cluster) else {
        return carry_all(format!(
            "destination cluster {} is not defined",
            flow.dest_cluster
        ));
    };
    let filter = match TopicFilter::new(&flow.include, flow.exclude.as_deref()) {
        Ok(filter) => filter,
        Err(error) => return carry_all(error.to_string()),
    };
    let (source, dest) = match (kafka.cluster(source_spec), kafka.cluster(dest_spec)) {
        (Ok(source), Ok(dest)) => (source, dest),
        (Err(error), _) | (_, Err(error)) => return carry_all(error.to_string()),
    };
    let (source_listing, dest_listing) = tokio::join!(source.list_topics(), dest.list_topics());
    let source_listing = match source_listing {
        Ok(listing) => listing,
        Err(error) => return carry_all(format!("source: {error}")),
    };
    let dest_listing = match dest_listing {
        Ok(listing) => listing,
        Err(error) => return carry_all(format!("destination: {error}")),
    };

    let excluded_configs = match config_exclusions(flow) {
        Ok(excluded) => excluded,
        Err(error) => return carry_all(error),
    };
    let mut discovery = FlowDiscovery {
        source_listed: true,
        ..FlowDiscovery::default()
    };
    let carry_topic = |discovery: &mut FlowDiscovery, topic: &str| {
        discovery.partitions.extend(
            previous
                .iter()
                .filter(|(key, _)| key.topic == topic)
                .map(|(key, assignment)| carried(key, assignment)),
        );
    };
    // Source topics that exist but whose metadata is incomplete right now.
    for topic in source_listing
        .unavailable
        .keys()
        .filter(|topic| filter.matches(topic))
    {
        debug!(flow = %flow.name, %topic, "source topic metadata incomplete, keeping its assignments");
        discovery.topics.push(topic.clone());
        carry_topic(&mut discovery, topic);
    }

    let mut ready: Vec<(String, i32, i32)> = Vec::new();
    let mut to_create: Vec<(String, i32)> = Vec::new();
    let mut to_grow: Vec<(String, i32, i32)> = Vec::new();
    for (topic, &source_count) in source_listing
        .partitions
        .iter()
        .filter(|(topic, _)| filter.matches(topic))
    {
        discovery.topics.push(topic.clone());
        discovery.matched.insert(topic.clone(), source_count);
        let dest_topic = flow.dest_topic(topic);
        let previous_source_count = previous
            .iter()
            .filter(|(key, _)| &key.topic == topic)
            .map(|(_, assignment)| assignment.source_partitions)
            .max();
        match dest_listing.partitions.get(&dest_topic) {
            None if dest_listing.unavailable.contains_key(&dest_topic) => {
                debug!(flow = %flow.name, topic = %dest_topic, "destination topic metadata incomplete, keeping its assignments");
                carry_topic(&mut discovery, topic);
            }
            None if previous_source_count.is_some() => {
                // It existed (the partitions were assigned) and is gone: someone
                // deleted it. Creating it again would silently resume mid-stream
                // into an empty topic; stop and say so instead.
                discovery.errors.push(format!(
                    "destination topic {dest_topic} no longer exists in cluster {}: create it again to resume from the checkpoints, or delete and re-create the flow to copy from the start",
                    flow.dest_cluster
                ));
                carry_topic(&mut discovery, topic);
            }
            None => to_create.push((topic.clone(), source_count)),
            Some(&dest_count)
                if dest_count < source_count && Some(dest_count) == previous_source_count =>
            {
                // The destination mirrored the source partition for partition; keep
                // it that way as the source grows.
                to_grow.push((topic.clone(), source_count, dest_count));
            }
            Some(&dest_count) => ready.push((topic.clone(), source_count, dest_count)),
        }
    }
    discovery.topics.sort();
    discovery.dest_existed = discovery
        .matched
        .keys()
        .filter(|topic| {
            dest_listing
                .partitions
                .contains_key(&flow.dest_topic(topic))
        })
        .cloned()
        .collect();

    // The source configs of every matching topic when they follow the source;
    // otherwise only those of topics to create.
    let config_topics: Vec<String> = if flow.config_sync.enabled {
        discovery.matched.keys().cloned().collect()
    } else {
        to_create.iter().map(|(topic, _)| topic.clone()).collect()
    };
    let configs = source.topic_configs(&config_topics).await.map(|by_topic| {
        by_topic
            .into_iter()
            .map(|(topic, result)| {
                let copied = result.map(|configs| {
                    configs
                        .into_iter()
                        .filter(|(name, _)| {
                            !excluded_configs.iter().any(|regex| regex.is_match(name))
                        })
                        .collect::<Vec<_>>()
                });
                (topic, copied)
            })
            .collect::<BTreeMap<_, _>>()
    });
    if let Ok(by_topic) = &configs {
        for (topic, result) in by_topic {
            if let Ok(topic_configs) = result {
                discovery
                    .source_configs
                    .insert(topic.clone(), topic_configs.iter().cloned().collect());
            }
        }
    }

    if !to_create.is_empty() {
        // (source topic, destination topic to create)
        let mut creatable: Vec<(String, TopicToCreate)> = Vec::new();
        for (topic, partitions) in &to_create {
            let topic_configs = match &configs {
                Ok(configs_by_topic) => match configs_by_topic.get(topic) {
                    Some(Ok(topic_configs)) => topic_configs.clone(),
                    Some(Err(cause)) => {
                        discovery.errors.push(format!(
                            "cannot read the configs of source topic {topic}: {cause}"
                        ));
                        carry_topic(&mut discovery, topic);
                        continue;
                    }
                    None => Vec::new(),
                },
                Err(error) => {
                    discovery.errors.push(format!(
                        "cannot read the configs of source topic {topic}: {error}"
                    ));
                    carry_topic(&mut discovery, topic);
                    continue;
                }
            };
            let new_topic = TopicToCreate {
                name: flow.dest_topic(topic),
                partitions: *partitions,
                configs: topic_configs,
            };
            creatable.push((topic.clone(), new_topic));
        }
        let new_topics: Vec<TopicToCreate> =
            creatable.iter().map(|(_, topic)| topic.clone()).collect();
        let created = crate::telemetry::kafka_admin(
            "create topics",
            &flow.dest_cluster,
            new_topics.len(),
            dest.create_topics(&new_topics),
        )
        .await;
        for (source_topic, topic) in creatable {
            let outcome = match &created {
                Ok(results) => results
                    .get(&topic.name)
                    .cloned()
                    .unwrap_or_else(|| Err("no answer from the cluster".to_string())),
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(()) => {
                    info!(
                        flow = %flow.name,
                        topic = %topic.name,
                        cluster = %flow.dest_cluster,
                        partitions = topic.partitions,
                        configs = topic.configs.len(),
                        "created destination topic"
                    );
                    discovery.created_topics.push(topic.name.clone());
                    ready.push((source_topic.clone(), topic.partitions, topic.partitions));
                }
                Err(cause) => {
                    discovery.errors.push(format!(
                        "cannot create destination topic {} in cluster {}: {cause}",
                        topic.name, flow.dest_cluster
                    ));
                    carry_topic(&mut discovery, &source_topic);
                }
            }
        }
    }

    for (topic, source_count, dest_count) in to_grow {
        let dest_topic = flow.dest_topic(&topic);
        let grow = dest.create_partitions(&dest_topic, source_count);
        match crate::telemetry::kafka_admin("create partitions", &flow.dest_cluster, 1, grow).await
        {
            Ok(()) => {
                info!(
                    flow = %flow.name,
                    topic = %dest_topic,
                    from = dest_count,
                    to = source_count,
                    "grew destination topic with its source"
                );
                ready.push((topic, source_count, source_count));
            }
            Err(cause) => {
                discovery.errors.push(format!(
                    "cannot grow destination topic {dest_topic} in cluster {} from {dest_count} to {source_count} partitions: {cause}",
                    flow.dest_cluster
                ));
                carry_topic(&mut discovery, &topic);
            }
        }
    }

    for (topic, source_count, dest_count) in ready {
        let dest_topic = flow.dest_topic(&topic);
        discovery
            .partitions
            .extend((0..source_count).map(|partition| WantedPartition {
                key: PartitionKey::new(flow.name.clone(), topic.clone(), partition),
                dest_topic: dest_topic.clone(),
                dest_partitions: dest_count,
                source_partitions: source_count,
                bytes_per_sec: 0.0,
            }));
    }
    discovery
}

/// Keeps each destination topic to one flow: a topic that appears later and
/// matches two flows writing into the same Kafka cluster (by name or cluster id)
/// is assigned to the flow already writing it, else the oldest; the other flows
/// leave its partitions unassigned and report why (see [`crate::guard`]).
async fn refuse_shared_dest_topics(
    running: &[&FlowSpec],
    discovered: &mut BTreeMap<FlowName, FlowDiscovery>,
    previous: &BTreeMap<PartitionKey, Assignment>,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
) {
    let dest_clusters: BTreeSet<&ClusterName> =
        running.iter().map(|flow| &flow.dest_cluster).collect();
    // Cluster ids only matter between two names (and cost a request while a
    // cluster cannot be reached): with one destination name, the name is enough.
    let look_up_ids = dest_clusters.len() > 1;
    let ids = join_all(dest_clusters.iter().map(|name| async move {
        let id_opt = match clusters.get(*name).map(|spec| kafka.cluster(spec)) {
            Some(Ok(client)) if look_up_ids => client.cluster_id().await,
            _ => None,
        };
        (
            (*name).clone(),
            id_opt.unwrap_or_else(|| format!("name:{name}")),
        )
    }))
    .await;
    let identity: BTreeMap<ClusterName, String> = ids.into_iter().collect();
    let dest_of = |flow: &FlowSpec, topic: &str| crate::guard::DestTopic {
        cluster: identity
            .get(&flow.dest_cluster)
            .cloned()
            .unwrap_or_else(|| format!("name:{}", flow.dest_cluster)),
        topic: topic.to_string(),
    };
    let mut claims = Vec::new();
    for flow in running {
        if let Some(discovery) = discovered.get(&flow.name) {
            let topics: BTreeSet<&String> = discovery
                .partitions
                .iter()
                .map(|partition| &partition.dest_topic)
                .collect();
            claims.extend(topics.into_iter().map(|topic| crate::guard::DestClaim {
                flow: flow.name.clone(),
                flow_created_ms: flow.created_ms,
                dest: dest_of(flow, topic),
            }));
        }
    }
    let mut held: BTreeMap<crate::guard::DestTopic, BTreeSet<FlowName>> = BTreeMap::new();
    for (key, assignment) in previous {
        if let Some(flow) = running.iter().find(|flow| flow.name == key.flow) {
            held.entry(dest_of(flow, &assignment.dest_topic))
                .or_default()
                .insert(flow.name.clone());
        }
    }
    let refused = crate::guard::refused_dest_claims(&claims, &held);
    for flow in running {
        let Some(discovery) = discovered.get_mut(&flow.name) else {
            continue;
        };
        let mine: Vec<(&crate::guard::DestTopic, &FlowName)> = refused
            .iter()
            .filter(|((refused_flow, _), _)| refused_flow == &flow.name)
            .map(|((_, dest), owner)| (dest, owner))
            .collect();
        for (dest, owner) in &mine {
            discovery
                .partitions
                .retain(|partition| partition.dest_topic != dest.topic);
            discovery.errors.push(format!(
                "destination topic {} in cluster {} is written by flow {owner}: its partitions are not assigned to this flow (two flows writing one topic would copy every record twice)",
                dest.topic, flow.dest_cluster
            ));
        }
    }
}

fn carried(key: &PartitionKey, assignment: &Assignment) -> WantedPartition {
    WantedPartition {
        key: key.clone(),
        dest_topic: assignment.dest_topic.clone(),
        dest_partitions: assignment.dest_partitions,
        source_partitions: assignment.source_partitions,
        bytes_per_sec: 0.0,
    }
}

/// The flow's config sync exclusions, compiled (whole-name matches).
fn config_exclusions(flow: &FlowSpec) -> Result<Vec<regex::Regex>, String> {
    flow.config_sync
        .exclude
        .iter()
        .map(|pattern| {
            regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|error| format!("invalid config sync exclusion {pattern:?}: {error}"))
        })
        .collect()
}

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

/// A partition's bytes/s as its fetcher last measured it; 0 when its checkpoint
/// has not moved for a minute (the partition is idle or stopped).
fn current_rate(checkpoint_opt: Option<&Checkpoint>, now_ms: i64) -> f64 {
    match checkpoint_opt {
        Some(checkpoint) if now_ms - checkpoint.updated_ms <= 60_000 => checkpoint.bytes_per_sec,
        _ => 0.0,
    }
}

/// What starting a flow writes: initial checkpoints (start position) and the
/// migration targets.
#[derive(Debug, Default)]
struct FlowStart {
    checkpoints: Vec<(PartitionKey, Checkpoint)>,
    targets: BTreeMap<String, BTreeMap<i32, OffsetRange>>,
}

/// Applies a new flow's start position to its partitions without a checkpoint
/// and captures the end offsets a migration copies up to.
async fn start_flow(
    flow: &FlowSpec,
    discovery: &FlowDiscovery,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
    checkpoints: &BTreeMap<PartitionKey, Checkpoint>,
    epoch: Epoch,
) -> Result<FlowStart, String> {
    if flow.start == StartPosition::Earliest && !flow.until_caught_up {
        return Ok(FlowStart::default());
    }
    let partitions: Vec<(String, i32)> = discovery
        .matched
        .iter()
        .flat_map(|(topic, &count)| (0..count).map(move |partition| (topic.clone(), partition)))
        .collect();
    let source = clusters
        .get(&flow.source_cluster)
        .ok_or_else(|| format!("source cluster {} is not defined", flow.source_cluster))
        .and_then(|spec| kafka.cluster(spec).map_err(|error| error.to_string()))?;
    let watermarks = source.watermarks(partitions.clone()).await;
    let mut bounds = Vec::with_capacity(partitions.len());
    for ((topic, partition), watermarks_opt) in partitions.iter().zip(watermarks) {
        let (low, high) = watermarks_opt.ok_or_else(|| {
            format!(
                "cannot start: the offsets of source partition {topic}/{partition} cannot be read from cluster {}",
                flow.source_cluster
            )
        })?;
        bounds.push((low, high));
    }
    let start_offsets: Vec<i64> = match flow.start {
        StartPosition::Earliest => bounds.iter().map(|(low, _)| *low).collect(),
        StartPosition::Latest => bounds.iter().map(|(_, high)| *high).collect(),
        StartPosition::Timestamp { ms } => source
            .offsets_for_time(partitions.clone(), ms)
            .await
            .map_err(|error| format!("cannot start: {error}"))?
            .into_iter()
            .zip(&bounds)
            .map(|(offset, (low, high))| {
                if offset < 0 {
                    *high
                } else {
                    offset.clamp(*low, *high)
                }
            })
            .collect(),
    };
    let mut start = FlowStart::default();
    for (((topic, partition), (low, high)), start_offset) in
        partitions.into_iter().zip(bounds).zip(start_offsets)
    {
        let key = PartitionKey::new(flow.name.clone(), topic.clone(), partition);
        let existing_opt = checkpoints.get(&key);
        if existing_opt.is_none() && flow.start != StartPosition::Earliest {
            start.checkpoints.push((
                key.clone(),
                Checkpoint {
                    next_offset: start_offset,
                    dest_partition: -1,
                    dest_offset: -1,
                    epoch,
                    updated_ms: now_ms(),
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
            start.targets.entry(topic).or_default().insert(
                partition,
                OffsetRange {
                    start: from.min(high),
                    end: high,
                },
            );
        }
    }
    Ok(start)
}

/// Topic configs by name.
type Configs = BTreeMap<String, String>;

/// Carries changed source topic configs to the destination. Returns, per source
/// topic, the configs now copied (to remember), or why they could not be.
async fn sync_topic_configs(
    flow: &FlowSpec,
    discovery: &FlowDiscovery,
    state: &FlowState,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &impl KafkaSide,
) -> Vec<(String, Result<BTreeMap<String, String>, String>)> {
    let mut outcomes = Vec::new();
    // (source topic, configs last copied, configs now)
    let mut changed: Vec<(&String, &Configs, &Configs)> = Vec::new();
    for (topic, current) in &discovery.source_configs {
        match state.source_configs.get(topic) {
            // Seen for the first time (created now with these configs, or a
            // destination topic that existed already): remember, change nothing.
            None => outcomes.push((topic.clone(), Ok(current.clone()))),
            Some(last) if last == current => {}
            Some(last) if discovery.dest_existed.contains(topic) => {
                changed.push((topic, last, current))
            }
            Some(_) => {}
        }
    }
    if changed.is_empty() {
        return outcomes;
    }
    let dest = match clusters
        .get(&flow.dest_cluster)
        .ok_or_else(|| format!("destination cluster {} is not defined", flow.dest_cluster))
        .and_then(|spec| kafka.cluster(spec).map_err(|error| error.to_string()))
    {
        Ok(dest) => dest,
        Err(cause) => {
            outcomes.extend(
                changed
                    .into_iter()
                    .map(|(topic, _, _)| (topic.clone(), Err(cause.clone()))),
            );
            return outcomes;
        }
    };
    let dest_topics: Vec<String> = changed
        .iter()
        .map(|(topic, _, _)| flow.dest_topic(topic))
        .collect();
    let dest_configs = match dest.dynamic_topic_configs(&dest_topics).await {
        Ok(configs) => configs,
        Err(error) => {
            outcomes.extend(
                changed
                    .into_iter()
                    .map(|(topic, _, _)| (topic.clone(), Err(error.to_string()))),
            );
            return outcomes;
        }
    };
    for ((topic, last, current), dest_topic) in changed.into_iter().zip(dest_topics) {
        let mut wanted = match dest_configs.get(&dest_topic) {
            Some(Ok(configs)) => configs.clone(),
            Some(Err(cause)) => {
                outcomes.push((topic.clone(), Err(cause.clone())));
                continue;
            }
            None => BTreeMap::new(),
        };
        for (name, value) in current {
            if last.get(name) != Some(value) {
                wanted.insert(name.clone(), value.clone());
            }
        }
        for name in last.keys().filter(|name| !current.contains_key(*name)) {
            wanted.remove(name);
        }
        let outcome = dest
            .replace_topic_configs(&dest_topic, &wanted)
            .await
            .map(|()| current.clone())
            .map_err(|cause| {
                format!(
                    "cannot alter the configs of destination topic {dest_topic} in cluster {}: {cause}",
                    flow.dest_cluster
                )
            });
        if outcome.is_ok() {
            info!(flow = %flow.name, topic = %dest_topic, "carried source topic config changes to the destination");
        }
        outcomes.push((topic.clone(), outcome));
    }
    outcomes
}

/// Signals the reconciler when flows, clusters or members change.
struct ChangeWatcher {
    client: Client,
    keys: Keys,
    changed_tx: mpsc::Sender<()>,
}

impl ChangeWatcher {
    async fn run(mut self, cancel: CancellationToken) {
        loop {
            match self.watch_until_broken(&cancel).await {
                Ok(()) => return,
                Err(error) => debug!(%error, "etcd watch broke, reopening"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn watch_until_broken(
        &mut self,
        cancel: &CancellationToken,
    ) -> Result<(), etcd_client::Error> {
        let prefix = || Some(WatchOptions::new().with_prefix());
        let mut stream = self.client.watch(self.keys.flows(), prefix()).await?;
        stream.watch(self.keys.clusters(), prefix()).await?;
        stream.watch(self.keys.members(), prefix()).await?;
        stream.watch(self.keys.drained(), prefix()).await?;
        stream.watch(self.keys.rebalance_request(), None).await?;
        // Whatever changed while no watch was open is caught by one more round.
        let _ = self.changed_tx.try_send(());
        loop {
            let message = tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                message = stream.message() => message?,
            };
            let Some(response) = message else {
                return Err(etcd_client::Error::WatchError(
                    "watch stream ended".to_string(),
                ));
            };
            if response.canceled() {
                return Err(etcd_client::Error::WatchError(format!(
                    "watch cancelled by etcd: {}",
                    response.cancel_reason()
                )));
            }
            if !response.events().is_empty() {
                // A full channel already holds a pending signal: nothing is lost.
                let _ = self.changed_tx.try_send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::MemberId;

    fn flow_spec(name: &str) -> FlowSpec {
        FlowSpec {
            name: FlowName::new(name).unwrap(),
            source_cluster: ClusterName::new("src").unwrap(),
            dest_cluster: ClusterName::new("dst").unwrap(),
            include: ".*".to_string(),
            exclude: None,
            created_ms: 0,
            rename: Default::default(),
            start: Default::default(),
            config_sync: Default::default(),
            paused: false,
            until_caught_up: false,
        }
    }

    fn assignment() -> Assignment {
        Assignment {
            fetcher: MemberId::new("f1").unwrap(),
            writer: MemberId::new("w1").unwrap(),
            epoch: Epoch(4),
            dest_topic: "orders".to_string(),
            dest_partitions: 2,
            source_partitions: 2,
            releasing_since_ms: None,
        }
    }

    #[test]
    fn an_unwanted_partition_is_released_by_its_live_fetcher_not_taken_away() {
        let flow = FlowName::new("dr").unwrap();
        let kept = PartitionKey::new(flow.clone(), "orders", 0);
        let unwanted = PartitionKey::new(flow.clone(), "orders", 1);
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
        let key = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
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
        let key = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
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
            .insert(PartitionKey::new(live.clone(), "orders", 0), assignment());
        snapshot
            .assignments
            .insert(PartitionKey::new(gone.clone(), "orders", 0), assignment());
        snapshot.flow_states.insert(
            gone_too.clone(),
            FlowState {
                error: String::new(),
                topics: vec![],
                updated_ms: 0,
                ..FlowState::default()
            },
        );
        let deleted: Vec<FlowName> = deleted_flows(&snapshot).into_iter().collect();
        assert_eq!(deleted, vec![gone, gone_too]);
    }

    #[tokio::test]
    async fn a_flow_whose_cluster_is_missing_keeps_its_assignments_and_says_why() {
        let flow = flow_spec("dr");
        let key = PartitionKey::new(flow.name.clone(), "orders", 1);
        let previous = BTreeMap::from([(key.clone(), assignment())]);
        let state = FlowState {
            error: String::new(),
            topics: vec!["orders".to_string()],
            updated_ms: 0,
            ..FlowState::default()
        };
        let discovery = discover_flow(
            &flow,
            &BTreeMap::new(),
            &KafkaClients::new(Duration::from_secs(1)),
            &previous,
            Some(&state),
        )
        .await;
        assert_eq!(discovery.errors, vec!["source cluster src is not defined"]);
        assert_eq!(discovery.topics, vec!["orders"]);
        assert_eq!(discovery.partitions.len(), 1);
        assert_eq!(discovery.partitions[0].key, key);
        assert_eq!(discovery.partitions[0].source_partitions, 2);
    }

    #[test]
    fn the_unassignable_reason_names_the_missing_role() {
        let problem = Problem {
            partitions: vec![],
            live_fetchers: BTreeSet::from([MemberId::new("f1").unwrap()]),
            live_writers: BTreeSet::new(),
            epoch: Epoch(1),
            tolerance: DEFAULT_TOLERANCE,
        };
        assert_eq!(
            unassignable_reason(&problem, 3),
            "no live writer in the fleet: 3 partitions are not assigned"
        );
    }
}
