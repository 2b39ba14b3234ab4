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
use kmirror_common::schema::{encode, Assignment, ClusterSpec, FlowSpec, FlowState};
use kmirror_common::{now_ms, ClusterName, Epoch, FlowName, Keys, MemberId, PartitionKey, Role};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::CoordinatorError;
use crate::kafka::{KafkaClients, TopicToCreate};
use crate::planner::{plan, Problem, WantedPartition};
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
                round = self.reconcile_once() => round,
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
            flow_states: true,
            ..Sections::default()
        };
        let snapshot = read_snapshot(&mut self.client, &self.keys, sections).await?;
        // Later rounds read later revisions (a round that changes anything writes),
        // so epochs grow across the fleet.
        let epoch = Epoch(snapshot.revision as u64 + 1);
        self.kafka.retain(&snapshot.clusters);

        let discoveries = join_all(snapshot.flows.values().map(|flow| {
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
        for (flow, discovery) in snapshot.flows.keys().zip(discoveries) {
            summary
                .created_topics
                .extend(discovery.created_topics.iter().cloned());
            discovered.insert(flow.clone(), discovery);
        }

        let mut live_fetchers: BTreeSet<MemberId> =
            snapshot.members_of(Role::Fetcher).cloned().collect();
        let mut live_writers: BTreeSet<MemberId> =
            snapshot.members_of(Role::Writer).cloned().collect();
        if self.leading_since.elapsed() < self.member_grace {
            for assignment in snapshot.assignments.values() {
                live_fetchers.insert(assignment.fetcher.clone());
                live_writers.insert(assignment.writer.clone());
            }
        }
        let problem = Problem {
            partitions: discovered
                .values()
                .flat_map(|discovery| discovery.partitions.iter().cloned())
                .collect(),
            live_fetchers,
            live_writers,
            epoch,
        };
        summary.partitions = problem.partitions.len();
        let previous: BTreeMap<PartitionKey, Assignment> = snapshot
            .assignments
            .iter()
            .filter(|(key, _)| snapshot.flows.contains_key(&key.flow))
            .map(|(key, assignment)| (key.clone(), assignment.clone()))
            .collect();
        let outcome = plan(&problem, &previous);
        summary.changed = outcome.changed.len();
        summary.removed = outcome.removed.len();

        let mut unassigned_by_flow: BTreeMap<&FlowName, usize> = BTreeMap::new();
        for key in &outcome.unassigned {
            *unassigned_by_flow.entry(&key.flow).or_insert(0) += 1;
        }
        for (flow, count) in unassigned_by_flow {
            if let Some(discovery) = discovered.get_mut(flow) {
                discovery.errors.push(unassignable_reason(&problem, count));
            }
        }

        let mut operations = Vec::new();
        for key in &outcome.changed {
            operations.push(TxnOp::put(
                self.keys.assignment(key),
                encode(&outcome.assignments[key]),
                None,
            ));
        }
        for key in &outcome.removed {
            operations.push(TxnOp::delete(self.keys.assignment(key), None));
        }
        for flow in deleted_flows(&snapshot) {
            operations.extend(self.flow_deletion(&flow));
            summary.deleted_flows.push(flow);
        }
        for (flow, discovery) in &discovered {
            let state = FlowState {
                error: discovery.errors.join("; "),
                topics: discovery.topics.clone(),
                updated_ms: now_ms(),
            };
            let previous_state_opt = snapshot.flow_states.get(flow);
            let unchanged = previous_state_opt.is_some_and(|previous| {
                previous.error == state.error && previous.topics == state.topics
            });
            if unchanged {
                continue;
            }
            let previous_error = previous_state_opt
                .map(|previous| previous.error.as_str())
                .unwrap_or("");
            if state.error.is_empty() && !previous_error.is_empty() {
                info!(%flow, "flow recovered");
            } else if !state.error.is_empty() && state.error != previous_error {
                warn!(%flow, error = %state.error, "flow cannot run");
            }
            operations.push(TxnOp::put(self.keys.flow_state(flow), encode(&state), None));
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
}

/// Looks at a flow's clusters: which source topics match, whether their destination
/// topics exist (creating or growing them), and which partitions to mirror. Where a
/// cluster cannot be looked at, the previous assignments are carried over unchanged
/// (the fetchers report their own errors), so a blip never stops mirroring.
async fn discover_flow(
    flow: &FlowSpec,
    clusters: &BTreeMap<ClusterName, ClusterSpec>,
    kafka: &KafkaClients,
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
        created_topics: Vec::new(),
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
    let (source, dest) = match (kafka.client(source_spec), kafka.client(dest_spec)) {
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

    let mut discovery = FlowDiscovery::default();
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

    if !to_create.is_empty() {
        let names: Vec<String> = to_create.iter().map(|(topic, _)| topic.clone()).collect();
        let configs = source.topic_configs(&names).await;
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
        let created = dest.create_topics(&new_topics).await;
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
        match dest.create_partitions(&dest_topic, source_count).await {
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
            }));
    }
    discovery
}

fn carried(key: &PartitionKey, assignment: &Assignment) -> WantedPartition {
    WantedPartition {
        key: key.clone(),
        dest_topic: assignment.dest_topic.clone(),
        dest_partitions: assignment.dest_partitions,
        source_partitions: assignment.source_partitions,
    }
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
        }
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
        };
        assert_eq!(
            unassignable_reason(&problem, 3),
            "no live writer in the fleet: 3 partitions are not assigned"
        );
    }
}
