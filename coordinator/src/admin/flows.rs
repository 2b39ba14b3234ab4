//! Flows: storing one (after the guard rails' preview of what it would copy),
//! listing them, pausing, resuming and deleting one. Pausing and deleting wait
//! until the flow's partitions stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use kmirror_common::schema::{encode, FlowSpec};
use kmirror_common::{ClusterName, FlowName};
use kmirror_proto::v1::{
    CreateFlowRequest, CreateFlowResponse, DeleteFlowRequest, Flow, TopicMatch,
};
use tracing::info;

use super::{already_exists, flow_message, flow_spec, not_found, AdminService};
use crate::error::CoordinatorError;
use crate::guard;
use crate::kafka;
use crate::store::{Sections, Snapshot};
use crate::topic_filter::TopicFilter;

/// How long pausing or deleting a flow waits for its partitions to stop: longer
/// than the leader gives a fetcher to release one (`RELEASE_TIMEOUT_MS`) plus a
/// round, shorter than kmirrorctl's request timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a flow matches now, for the operator storing it.
struct FlowPreview {
    topics: Vec<TopicMatch>,
    warnings: Vec<String>,
}

impl AdminService {
    pub async fn create_flow(
        &self,
        request: CreateFlowRequest,
    ) -> Result<CreateFlowResponse, CoordinatorError> {
        let flow = request
            .flow
            .ok_or_else(|| CoordinatorError::InvalidArgument("the flow is missing".to_string()))?;
        let mut spec = flow_spec(flow)?;
        let preview = self.checked_flow_preview(&spec, request.replace).await?;

        let mut client = self.client.clone();
        let flow_key = self.keys.flow(&spec.name);
        let name = spec.name.clone();
        let source_key = self.keys.cluster(&spec.source_cluster);
        let dest_key = self.keys.cluster(&spec.dest_cluster);
        let mut conditions = vec![
            Compare::create_revision(source_key.as_str(), CompareOp::Greater, 0),
            Compare::create_revision(dest_key.as_str(), CompareOp::Greater, 0),
        ];
        if request.replace {
            // An update keeps what belongs to the running flow: when it was
            // created and whether it is paused.
            let stored_opt: Option<(FlowSpec, i64)> = self.read_stored(flow_key.as_str()).await?;
            match stored_opt {
                Some((stored, revision)) => {
                    spec.created_ms = stored.created_ms;
                    spec.paused = stored.paused;
                    conditions.push(Compare::mod_revision(
                        flow_key.as_str(),
                        CompareOp::Equal,
                        revision,
                    ));
                }
                None => conditions.push(Compare::create_revision(
                    flow_key.as_str(),
                    CompareOp::Equal,
                    0,
                )),
            }
        } else {
            conditions.push(Compare::create_revision(
                flow_key.as_str(),
                CompareOp::Equal,
                0,
            ));
        }
        // The clusters must exist at the moment the flow is stored, not just when
        // they were checked.
        let checks = [
            TxnOp::get(flow_key.as_str(), Some(GetOptions::new().with_count_only())),
            TxnOp::get(
                source_key.as_str(),
                Some(GetOptions::new().with_count_only()),
            ),
            TxnOp::get(dest_key.as_str(), Some(GetOptions::new().with_count_only())),
        ];
        let txn = Txn::new()
            .when(conditions)
            .and_then([TxnOp::put(flow_key.as_str(), encode(&spec), None)])
            .or_else(checks);
        let response = client.txn(txn).await?;
        if !response.succeeded() {
            let counts: Vec<i64> = response
                .op_responses()
                .into_iter()
                .map(|op| match op {
                    etcd_client::TxnOpResponse::Get(get) => get.count(),
                    _ => 0,
                })
                .collect();
            return Err(match counts.as_slice() {
                [_, 0, _] => not_found("source cluster", &spec.source_cluster),
                [_, _, 0] => not_found("destination cluster", &spec.dest_cluster),
                [flows, _, _] if *flows > 0 && !request.replace => already_exists("flow", &name),
                _ => CoordinatorError::InvalidArgument(format!(
                    "flow {name} changed while it was being updated: try again"
                )),
            });
        }
        info!(flow = %name, source = %spec.source_cluster, dest = %spec.dest_cluster, include = %spec.include, replace = request.replace, topics = preview.topics.len(), "stored flow");
        Ok(CreateFlowResponse {
            flow: Some(flow_message(&spec, None)),
            topics: preview.topics,
            warnings: preview.warnings,
        })
    }

    /// The topics a flow to be stored matches now, with warnings; refuses what
    /// the guard rails refuse: a rename change under checkpoints, destination
    /// topics another flow writes (in the same cluster, by name or by Kafka
    /// cluster id).
    ///
    /// The check reads before the flow is stored: two flows stored at the same
    /// moment may both pass it, and then the leader gives each shared topic to
    /// one of them (see `refuse_shared_dest_topics` in the reconciler).
    async fn checked_flow_preview(
        &self,
        spec: &FlowSpec,
        replace: bool,
    ) -> Result<FlowPreview, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                clusters: true,
                flows: true,
                assignments: true,
                checkpoints: true,
                ..Sections::default()
            })
            .await?;
        let Some(source_spec) = snapshot.clusters.get(&spec.source_cluster) else {
            return Err(not_found("source cluster", &spec.source_cluster));
        };
        let Some(dest_spec) = snapshot.clusters.get(&spec.dest_cluster) else {
            return Err(not_found("destination cluster", &spec.dest_cluster));
        };
        if let Some(stored) = snapshot.flows.get(&spec.name) {
            if !replace {
                return Err(already_exists("flow", &spec.name));
            }
            let checkpointed = snapshot
                .checkpoints
                .keys()
                .filter(|key| key.flow == spec.name)
                .count();
            if let Some(refusal) = guard::rename_change_refusal(stored, spec, checkpointed) {
                return Err(CoordinatorError::Refused(refusal));
            }
        }

        let filter = TopicFilter::new(&spec.include, spec.exclude.as_deref())?;
        let source = self.kafka.client(source_spec)?;
        let dest = self.kafka.client(dest_spec)?;
        let (source_listing, dest_listing) = tokio::join!(source.list_topics(), dest.list_topics());
        let matches = guard::topic_matches(spec, &filter, &source_listing?, &dest_listing?);

        // Other flows writing into the same cluster, and the topics they write:
        // the ones they match now and the ones they hold assignments to.
        let other_dest_names: BTreeSet<&ClusterName> = snapshot
            .flows
            .values()
            .filter(|other| other.name != spec.name && other.dest_cluster != spec.dest_cluster)
            .map(|other| &other.dest_cluster)
            .collect();
        // Kafka cluster ids only when another flow writes to a cluster of another
        // name (reading one costs a request, a timeout while it is unreachable).
        let dest_id_opt = match other_dest_names.is_empty() {
            true => None,
            false => dest.cluster_id().await,
        };
        let mut same_dest: BTreeMap<ClusterName, bool> =
            BTreeMap::from([(spec.dest_cluster.clone(), true)]);
        for name in other_dest_names {
            let same = self
                .same_cluster(&snapshot, dest_id_opt.as_deref(), name)
                .await;
            same_dest.insert(name.clone(), same);
        }
        let mut others: BTreeMap<FlowName, BTreeSet<String>> = BTreeMap::new();
        let mut listings: BTreeMap<ClusterName, Option<kafka::TopicListing>> = BTreeMap::new();
        for other in snapshot.flows.values().filter(|other| {
            other.name != spec.name && same_dest.get(&other.dest_cluster) == Some(&true)
        }) {
            let mut topics: BTreeSet<String> = snapshot
                .assignments
                .iter()
                .filter(|(key, _)| key.flow == other.name)
                .map(|(_, assignment)| assignment.dest_topic.clone())
                .collect();
            if !listings.contains_key(&other.source_cluster) {
                let listing_opt = match snapshot.clusters.get(&other.source_cluster) {
                    Some(other_source) => match self.kafka.client(other_source) {
                        Ok(client) => client.list_topics().await.ok(),
                        Err(_) => None,
                    },
                    None => None,
                };
                listings.insert(other.source_cluster.clone(), listing_opt);
            }
            if let (Some(listing), Ok(other_filter)) = (
                &listings[&other.source_cluster],
                TopicFilter::new(&other.include, other.exclude.as_deref()),
            ) {
                topics.extend(
                    listing
                        .partitions
                        .keys()
                        .filter(|topic| other_filter.matches(topic))
                        .map(|topic| other.dest_topic(topic)),
                );
            }
            others.insert(other.name.clone(), topics);
        }
        let shared = guard::shared_dest_topics(matches.iter().map(|m| &m.dest_topic), &others);
        if let Some(refusal) =
            guard::shared_dest_topics_refusal(&spec.name, spec.dest_cluster.as_str(), &shared)
        {
            return Err(CoordinatorError::Refused(refusal));
        }
        Ok(FlowPreview {
            warnings: guard::match_warnings(spec, &matches),
            topics: matches
                .into_iter()
                .map(|matched| TopicMatch {
                    source_topic: matched.source_topic,
                    dest_topic: matched.dest_topic,
                    source_partitions: matched.source_partitions,
                    dest_partitions: matched.dest_partitions_opt.unwrap_or(0),
                })
                .collect(),
        })
    }

    /// Whether cluster `other`, of another name, is the cluster of Kafka id
    /// `ours_id_opt`.
    async fn same_cluster(
        &self,
        snapshot: &Snapshot,
        ours_id_opt: Option<&str>,
        other: &ClusterName,
    ) -> bool {
        let (Some(ours_id), Some(other_spec)) = (ours_id_opt, snapshot.clusters.get(other)) else {
            return false;
        };
        match self.kafka.client(other_spec) {
            Ok(client) => client.cluster_id().await.as_deref() == Some(ours_id),
            Err(_) => false,
        }
    }

    pub async fn list_flows(&self) -> Result<Vec<Flow>, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                flows: true,
                flow_states: true,
                ..Sections::default()
            })
            .await?;
        Ok(snapshot
            .flows
            .values()
            .map(|flow| flow_message(flow, snapshot.flow_states.get(&flow.name)))
            .collect())
    }

    /// Sets a flow's `paused` flag (compare-and-swap on the stored flow); the
    /// leader then removes or re-plans its assignments.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Flow, CoordinatorError> {
        let name = FlowName::new(name)?;
        let key = self.keys.flow(&name);
        let mut client = self.client.clone();
        loop {
            let Some((mut spec, revision)) = self.read_stored::<FlowSpec>(key.as_str()).await?
            else {
                return Err(not_found("flow", &name));
            };
            spec.paused = paused;
            let unchanged = Compare::mod_revision(key.as_str(), CompareOp::Equal, revision);
            let txn = Txn::new().when([unchanged]).and_then([TxnOp::put(
                key.as_str(),
                encode(&spec),
                None,
            )]);
            if client.txn(txn).await?.succeeded() {
                info!(flow = %name, paused, "flow pause state set");
                return Ok(flow_message(&spec, None));
            }
        }
    }

    /// Pauses a flow and returns once every partition of it stopped: its fetcher
    /// got the acks of what it sent, wrote the final checkpoint and gave the
    /// partition back. A resume then starts exactly where the pause stopped.
    pub async fn pause_flow(&self, name: &str) -> Result<Flow, CoordinatorError> {
        let flow = self.set_paused(name, true).await?;
        self.wait_until_stopped(&FlowName::new(name)?).await?;
        Ok(flow)
    }

    /// Waits until the flow holds no assignment (the leader asks each fetcher to
    /// release its partitions; fetchers that are gone lose them at once).
    async fn wait_until_stopped(&self, name: &FlowName) -> Result<(), CoordinatorError> {
        let prefix = self.keys.flow_assignments(name);
        let started = std::time::Instant::now();
        let mut client = self.client.clone();
        loop {
            let options = GetOptions::new().with_prefix().with_count_only();
            let pending = client.get(prefix.as_str(), Some(options)).await?.count() as usize;
            if pending == 0 {
                info!(flow = %name, waited_ms = started.elapsed().as_millis() as u64, "flow stopped");
                return Ok(());
            }
            if started.elapsed() >= STOP_TIMEOUT {
                return Err(CoordinatorError::StopTimedOut {
                    flow: name.to_string(),
                    pending,
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(STOP_POLL_INTERVAL).await;
        }
    }

    /// Deletes a flow once its partitions stopped (see [`Self::pause_flow`]), so
    /// nothing of it is written after the call returns.
    pub async fn delete_flow(&self, request: DeleteFlowRequest) -> Result<(), CoordinatorError> {
        let name = FlowName::new(request.name)?;
        self.set_paused(name.as_str(), true).await?;
        self.wait_until_stopped(&name).await?;
        let key = self.keys.flow(&name);
        let exists = Compare::create_revision(key.as_str(), CompareOp::Greater, 0);
        let txn = Txn::new()
            .when([exists])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        let response = self.client.clone().txn(txn).await?;
        if !response.succeeded() {
            return Err(not_found("flow", &name));
        }
        info!(flow = %name, "deleted flow");
        Ok(())
    }
}
