//! The leader's reconcile loop: from flows, clusters and live members to destination
//! topics, partition assignments and flow states in etcd.
//!
//! Each round reads the control state at one etcd revision, discovers what the
//! Kafka clusters of every running flow hold, decides with pure functions and the
//! planner, and applies the decision in transactions guarded by the leadership key
//! (see [`crate::round`] for the steps). A round runs every refresh interval and,
//! debounced, soon after a change under `flows/`, `clusters/` or `members/`.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, LeaderKey, WatchOptions};
use futures::future::join_all;
use kmirror_common::schema::{FlowPhase, FlowSpec, FlowState};
use kmirror_common::{now_ms, FlowName, Keys};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::CoordinatorError;
use crate::kafka::KafkaClients;
use crate::round::apply::apply;
use crate::round::config_sync::{flows_to_sync, remember_copied};
use crate::round::decide::{decide_round, RoundInput};
use crate::round::discover;
use crate::round::lifecycle::{
    decide_lifecycle, flow_phase, flow_start, flows_to_start, Lifecycle,
};
use crate::round::planning::round_epoch;
use crate::round::topics::refuse_shared_dest_topics;
use crate::round::FlowDiscovery;
pub use crate::round::RoundSummary;
use crate::store::{read_snapshot, Sections, Snapshot};

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

    /// One round: read the control state, discover (Kafka), decide (pure), apply
    /// (one fenced etcd write).
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
        self.kafka.retain(&snapshot.clusters);
        kmirror_common::metrics::publish_held(&snapshot.holds);
        // Paused and completed flows are not looked at: they want no partition, so
        // the plan removes their assignments (their checkpoints stay).
        let running = running_flows(&snapshot);
        let mut discovered = self.discover(&snapshot, &running).await;
        let now = now_ms();
        let mut lifecycle = self
            .start_flows(&snapshot, &running, &mut discovered, now)
            .await;
        self.sync_configs(&snapshot, &running, &discovered, &mut lifecycle.states)
            .await;
        let decision = decide_round(
            &snapshot,
            RoundInput {
                discovered,
                running_states: lifecycle.states,
                initial_checkpoints: lifecycle.initial_checkpoints,
                in_grace: self.leading_since.elapsed() < self.member_grace,
                now_ms: now,
            },
        );
        apply(&mut self.client, &self.leader, &self.keys, &decision).await?;
        Ok(decision.summary)
    }

    /// Looks at every running flow's clusters, then keeps each destination topic
    /// to one flow.
    async fn discover(
        &self,
        snapshot: &Snapshot,
        running: &[&FlowSpec],
    ) -> BTreeMap<FlowName, FlowDiscovery> {
        let map_topic = kmirror_common::offset_map::map_topic(self.keys.fleet());
        let mut discovered = discover::discover_flows(
            running,
            &map_topic,
            &snapshot.clusters,
            &self.kafka,
            &snapshot.assignments,
            &snapshot.flow_states,
        )
        .await;
        let identities =
            discover::dest_cluster_identities(running, &snapshot.clusters, &self.kafka).await;
        refuse_shared_dest_topics(running, &mut discovered, &snapshot.assignments, &identities);
        discovered
    }

    /// Flows seen for the first time: reads their start offsets, then applies
    /// their start position and captures their migration targets before anything
    /// of them is assigned; completes the migrations that reached their targets.
    async fn start_flows(
        &self,
        snapshot: &Snapshot,
        running: &[&FlowSpec],
        discovered: &mut BTreeMap<FlowName, FlowDiscovery>,
        now: i64,
    ) -> Lifecycle {
        let epoch = round_epoch(snapshot);
        let starting = flows_to_start(running, &snapshot.flow_states, discovered);
        let offsets = join_all(starting.iter().map(|flow| {
            discover::read_start_offsets(
                flow,
                &discovered[&flow.name],
                &snapshot.clusters,
                &self.kafka,
            )
        }))
        .await;
        let starts = starting
            .iter()
            .zip(offsets)
            .map(|(flow, offsets)| {
                let start = offsets.map(|offsets_opt| {
                    flow_start(
                        flow,
                        offsets_opt.as_ref(),
                        &snapshot.checkpoints,
                        epoch,
                        now,
                    )
                });
                (flow.name.clone(), start)
            })
            .collect();
        decide_lifecycle(
            running,
            &snapshot.flow_states,
            discovered,
            starts,
            &snapshot.checkpoints,
            now,
        )
    }

    /// Topic configs follow the source: a source value that changed since it was
    /// last copied is carried over, and what was copied is remembered in `states`.
    async fn sync_configs(
        &mut self,
        snapshot: &Snapshot,
        running: &[&FlowSpec],
        discovered: &BTreeMap<FlowName, FlowDiscovery>,
        states: &mut BTreeMap<FlowName, FlowState>,
    ) {
        let syncing = flows_to_sync(running, states, discovered);
        let syncs = join_all(syncing.iter().map(|flow| {
            discover::sync_topic_configs(
                flow,
                &discovered[&flow.name],
                &states[&flow.name],
                &snapshot.clusters,
                &self.kafka,
            )
        }))
        .await;
        for (flow, outcomes) in syncing.iter().zip(syncs) {
            let state = states.get_mut(&flow.name).expect("state");
            for (topic, failure_opt) in remember_copied(state, outcomes, &discovered[&flow.name]) {
                let failure_key = (flow.name.clone(), topic);
                match failure_opt {
                    None => {
                        self.config_sync_failures.remove(&failure_key);
                    }
                    // Logged once per cause.
                    Some(cause) => {
                        if self.config_sync_failures.get(&failure_key) != Some(&cause) {
                            warn!(flow = %flow.name, topic = %failure_key.1, error = %cause, "cannot carry topic config changes to the destination");
                            self.config_sync_failures.insert(failure_key, cause);
                        }
                    }
                }
            }
        }
    }
}

/// The flows a round looks at: those neither paused nor completed.
fn running_flows(snapshot: &Snapshot) -> Vec<&FlowSpec> {
    snapshot
        .flows
        .values()
        .filter(|flow| flow_phase(flow, snapshot.flow_states.get(&flow.name)) == FlowPhase::Running)
        .collect()
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
        stream.watch(self.keys.undeliverable(), prefix()).await?;
        // A partition held (or reset) is released (or planned) at once.
        stream.watch(self.keys.holds(), prefix()).await?;
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
