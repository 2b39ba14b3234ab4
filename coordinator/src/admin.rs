//! The admin API kmirrorctl talks to. Any coordinator serves it, leader or not:
//! writes to `clusters/` and `flows/` are create-if-absent transactions, and the
//! leader picks them up through its watch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use futures::future::join_all;
use kmirror_common::schema::{
    decode, encode, Assignment, ClusterSpec, ConfigSync, Drain, FlowSpec, FlowState,
    RebalanceRequest as StoredRebalanceRequest, RenamePolicy, StartPosition,
};
use kmirror_common::{now_ms, ClusterName, FlowName, Keys, MemberId, PartitionKey, Role};
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::admin_server::Admin;
use kmirror_proto::v1::{
    AddClusterRequest, AddClusterResponse, AssignmentInfo, Cluster, CreateFlowRequest,
    CreateFlowResponse, DeleteClusterRequest, DeleteClusterResponse, DeleteFlowRequest,
    DeleteFlowResponse, DrainMemberRequest, DrainMemberResponse, Flow, FlowStatus,
    ListAssignmentsRequest, ListAssignmentsResponse, ListClustersRequest, ListClustersResponse,
    ListFlowsRequest, ListFlowsResponse, ListMembersRequest, ListMembersResponse, Member,
    PartitionMove, PauseFlowRequest, PauseFlowResponse, RebalanceRequest, RebalanceResponse,
    ResumeFlowRequest, ResumeFlowResponse, StatusRequest, StatusResponse, TopicMatch,
};
use tracing::info;

use crate::error::CoordinatorError;
use crate::guard;
use crate::kafka::{self, ClusterClient, KafkaClients};
use crate::planner::{plan, Problem};
use crate::round::flow_phase;
use crate::round::planning::PlanningMode;
use crate::round::topics::carried;
use crate::status::{flow_status, partition_status, status_partitions};
use crate::store::{elected_leader, read_snapshot, Sections, Snapshot};
use crate::topic_filter::TopicFilter;

/// How long pausing or deleting a flow waits for its partitions to stop: longer
/// than the leader gives a fetcher to release one (`RELEASE_TIMEOUT_MS`) plus a
/// round, shorter than kmirrorctl's request timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Serves the `kmirror.v1.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    client: Client,
    keys: Keys,
    kafka: KafkaClients,
}

impl AdminService {
    pub fn new(client: Client, keys: Keys, kafka: KafkaClients) -> Self {
        Self {
            client,
            keys,
            kafka,
        }
    }

    pub async fn add_cluster(
        &self,
        request: AddClusterRequest,
    ) -> Result<AddClusterResponse, CoordinatorError> {
        let cluster = request.cluster.ok_or_else(|| {
            CoordinatorError::InvalidArgument("the cluster is missing".to_string())
        })?;
        let name = ClusterName::new(cluster.name)?;
        let given_bootstrap = cluster.bootstrap_servers.trim().to_string();
        if given_bootstrap.is_empty() && !(request.replace && request.keep_properties) {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: the bootstrap address is empty"
            )));
        }
        if cluster.properties.contains_key("bootstrap.servers") {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: give bootstrap.servers as the bootstrap address, not as a property"
            )));
        }
        let mut client = self.client.clone();
        let key = self.keys.cluster(&name);
        let existing = client.get(key.as_str(), None).await?;
        let stored_opt: Option<(ClusterSpec, i64)> = match existing.kvs().first() {
            Some(kv) => Some((
                decode(kv.key(), kv.value()).map_err(kmirror_common::etcd::EtcdError::from)?,
                kv.mod_revision(),
            )),
            None => None,
        };
        if !request.replace && stored_opt.is_some() {
            return Err(already_exists("cluster", &name));
        }
        // Replacing what is kept (a credential, say) may leave the address as stored.
        let bootstrap_servers = match (given_bootstrap.is_empty(), &stored_opt) {
            (false, _) => given_bootstrap,
            (true, Some((stored, _))) => stored.bootstrap_servers.clone(),
            (true, None) => {
                return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: the bootstrap address is empty (there is no stored one to keep)"
            )))
            }
        };
        let given: BTreeMap<String, String> = cluster.properties.into_iter().collect();
        let merged = if request.keep_properties {
            merged_properties(
                stored_opt.as_ref().map(|(stored, _)| &stored.properties),
                given,
                &request.remove_properties,
            )
            .map_err(|unknown| {
                CoordinatorError::InvalidArgument(format!(
                    "cluster {name}: cannot remove property {unknown}: it is not set"
                ))
            })?
        } else {
            MergedProperties {
                properties: given,
                ..MergedProperties::default()
            }
        };
        let spec = ClusterSpec {
            name: name.clone(),
            bootstrap_servers,
            properties: merged.properties,
        };
        // Secrets are stored sealed, never in the clear (refused without a key).
        let mut stored = spec.clone();
        kmirror_common::secrets::seal_properties(&name, &mut stored.properties)?;
        // A cluster is only stored once it answers: a typo in the address fails here,
        // not later in a flow.
        let probe = ClusterClient::build(&spec, self.kafka.timeout())?;
        let reachable = probe.list_topics().await;
        probe.dispose();
        reachable?;

        let put = TxnOp::put(key.as_str(), encode(&stored), None);
        // Stored over exactly what was read: a concurrent change is not lost
        // silently (its properties were merged from the version read).
        let unchanged = match &stored_opt {
            Some((_, revision)) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision),
            None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        };
        let response = client
            .txn(Txn::new().when([unchanged]).and_then([put]))
            .await?;
        if !response.succeeded() {
            return Err(match request.replace {
                true => CoordinatorError::InvalidArgument(format!(
                    "cluster {name} changed while it was being stored: try again"
                )),
                false => already_exists("cluster", &name),
            });
        }
        info!(cluster = %name, bootstrap = %spec.bootstrap_servers, replace = request.replace, kept = merged.kept.len(), removed = merged.removed.len(), "stored cluster");
        Ok(AddClusterResponse {
            cluster: Some(cluster_message(&spec)),
            kept_properties: merged.kept,
            removed_properties: merged.removed,
        })
    }

    /// Removes a cluster no flow reads from or writes to. The check and the
    /// delete are one transaction over the flows, so a flow created meanwhile
    /// keeps its cluster.
    pub async fn delete_cluster(&self, name: &str) -> Result<(), CoordinatorError> {
        let name = ClusterName::new(name)?;
        let snapshot = self
            .read(Sections {
                clusters: true,
                flows: true,
                ..Sections::default()
            })
            .await?;
        if !snapshot.clusters.contains_key(&name) {
            return Err(not_found("cluster", &name));
        }
        let users: Vec<String> = snapshot
            .flows
            .values()
            .filter(|flow| flow.source_cluster == name || flow.dest_cluster == name)
            .map(|flow| flow.name.to_string())
            .collect();
        if !users.is_empty() {
            return Err(CoordinatorError::Refused(format!(
                "cluster {name} is used by flow(s) {}: delete them first (kmirrorctl flow delete NAME)",
                users.join(", ")
            )));
        }
        let key = self.keys.cluster(&name);
        let flows_unchanged = Compare::mod_revision(
            self.keys.flows().as_str(),
            CompareOp::Less,
            snapshot.revision + 1,
        )
        .with_prefix();
        let response = self
            .client
            .clone()
            .txn(
                Txn::new()
                    .when([flows_unchanged])
                    .and_then([TxnOp::delete(key.as_str(), None)]),
            )
            .await?;
        if !response.succeeded() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "the flows changed while cluster {name} was being deleted: try again"
            )));
        }
        info!(cluster = %name, "deleted cluster");
        Ok(())
    }

    pub async fn list_clusters(&self) -> Result<Vec<Cluster>, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                clusters: true,
                ..Sections::default()
            })
            .await?;
        Ok(snapshot.clusters.values().map(cluster_message).collect())
    }

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
            let existing = client.get(flow_key.as_str(), None).await?;
            match existing.kvs().first() {
                Some(kv) => {
                    let stored: FlowSpec = decode(kv.key(), kv.value())
                        .map_err(kmirror_common::etcd::EtcdError::from)?;
                    spec.created_ms = stored.created_ms;
                    spec.paused = stored.paused;
                    conditions.push(Compare::mod_revision(
                        flow_key.as_str(),
                        CompareOp::Equal,
                        kv.mod_revision(),
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
            let response = client.get(key.as_str(), None).await?;
            let Some(kv) = response.kvs().first() else {
                return Err(not_found("flow", &name));
            };
            let mut spec: FlowSpec =
                decode(kv.key(), kv.value()).map_err(kmirror_common::etcd::EtcdError::from)?;
            spec.paused = paused;
            let unchanged =
                Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision());
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

    pub async fn list_assignments(
        &self,
        request: ListAssignmentsRequest,
    ) -> Result<Vec<AssignmentInfo>, CoordinatorError> {
        let only_opt = match request.flow.as_str() {
            "" => None,
            name => Some(FlowName::new(name)?),
        };
        let snapshot = self
            .read(Sections {
                flows: true,
                assignments: true,
                checkpoints: true,
                ..Sections::default()
            })
            .await?;
        if let Some(only) = &only_opt {
            if !snapshot.flows.contains_key(only) {
                return Err(not_found("flow", only));
            }
        }
        Ok(snapshot
            .assignments
            .iter()
            .filter(|(key, _)| only_opt.as_ref().is_none_or(|only| &key.flow == only))
            .map(|(key, assignment)| {
                let checkpoint_opt = snapshot.checkpoints.get(key);
                AssignmentInfo {
                    flow: key.flow.to_string(),
                    topic: key.topic.clone(),
                    partition: key.partition,
                    dest_topic: assignment.dest_topic.clone(),
                    fetcher: assignment.fetcher.to_string(),
                    writer: assignment.writer.to_string(),
                    epoch: assignment.epoch.0,
                    records_per_sec: checkpoint_opt.map_or(0.0, |c| c.records_per_sec),
                    bytes_per_sec: checkpoint_opt.map_or(0.0, |c| c.bytes_per_sec),
                }
            })
            .collect())
    }

    /// Marks a member drained (or not): the leader moves its partitions away and
    /// gives it nothing new.
    pub async fn drain_member(
        &self,
        request: DrainMemberRequest,
    ) -> Result<DrainMemberResponse, CoordinatorError> {
        let id = MemberId::new(request.id)?;
        let snapshot = self
            .read(Sections {
                members: true,
                assignments: true,
                operator_requests: true,
                ..Sections::default()
            })
            .await?;
        let registered: Vec<Role> = [Role::Fetcher, Role::Writer, Role::Coordinator]
            .into_iter()
            .filter(|role| snapshot.members.contains_key(&(*role, id.clone())))
            .collect();
        let drained: Vec<Role> = snapshot
            .drained
            .iter()
            .filter(|(_, drained_id)| drained_id == &id)
            .map(|(role, _)| *role)
            .collect();
        let role = match (registered.as_slice(), drained.as_slice()) {
            ([Role::Coordinator], _) => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "member {id} is a coordinator: coordinators hold no partitions (stop it to hand over the lead)"
                )))
            }
            ([role], _) => *role,
            ([], [role]) if request.undo => *role,
            ([], _) => return Err(not_found("member", &id)),
            _ => {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "member id {id} is registered under several roles"
                )))
            }
        };
        if !request.undo {
            refuse_draining_the_last_member(&snapshot, role, &id)?;
        }
        let key = self.keys.drained_member(role, &id);
        let mut client = self.client.clone();
        if request.undo {
            client.delete(key.as_str(), None).await?;
            info!(member = %id, %role, "member no longer drained");
        } else {
            let value = encode(&Drain { since_ms: now_ms() });
            let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
            client
                .txn(
                    Txn::new()
                        .when([absent])
                        .and_then([TxnOp::put(key.as_str(), value, None)]),
                )
                .await?;
            info!(member = %id, %role, "member drained");
        }
        let partitions = snapshot
            .assignments
            .values()
            .filter(|assignment| match role {
                Role::Fetcher => assignment.fetcher == id,
                Role::Writer => assignment.writer == id,
                Role::Coordinator => false,
            })
            .count() as u32;
        Ok(DrainMemberResponse {
            id: id.to_string(),
            role: role.to_string(),
            partitions,
        })
    }

    /// The moves that even out the running partitions (tolerance 0); with
    /// `dry_run` false, asks the leader to apply them and waits until it did.
    pub async fn rebalance(
        &self,
        request: RebalanceRequest,
    ) -> Result<RebalanceResponse, CoordinatorError> {
        let sections = Sections {
            members: true,
            assignments: true,
            checkpoints: true,
            operator_requests: true,
            ..Sections::default()
        };
        let snapshot = self.read(sections).await?;
        if request.dry_run {
            let moves = rebalance_moves(&snapshot, now_ms());
            return Ok(RebalanceResponse {
                moves,
                applied: false,
            });
        }
        let mut client = self.client.clone();
        if elected_leader(&mut client, &self.keys).await.is_none() {
            return Err(CoordinatorError::InvalidArgument(
                "no coordinator leads the fleet: nothing can be moved".to_string(),
            ));
        }
        let key = self.keys.rebalance_request();
        let value = encode(&StoredRebalanceRequest {
            requested_ms: now_ms(),
        });
        client.put(key.as_str(), value, None).await?;
        let deadline = tokio::time::Instant::now() + REBALANCE_TIMEOUT;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if client.get(key.as_str(), None).await?.kvs().is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoordinatorError::InvalidArgument(format!(
                    "the leader did not apply the rebalance within {}s (it stays requested)",
                    REBALANCE_TIMEOUT.as_secs()
                )));
            }
        }
        let after = self.read(sections).await?;
        let mut moves = Vec::new();
        for (key, before) in &snapshot.assignments {
            let Some(now) = after.assignments.get(key) else {
                continue;
            };
            for (role, from, to) in [
                (Role::Fetcher, &before.fetcher, &now.fetcher),
                (Role::Writer, &before.writer, &now.writer),
            ] {
                if from != to {
                    moves.push(move_message(key, role, from, to));
                }
            }
        }
        Ok(RebalanceResponse {
            moves,
            applied: true,
        })
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

    pub async fn list_members(&self) -> Result<Vec<Member>, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                members: true,
                assignments: true,
                checkpoints: true,
                operator_requests: true,
                ..Sections::default()
            })
            .await?;
        let mut client = self.client.clone();
        let leader_opt = elected_leader(&mut client, &self.keys).await;
        let lease_remaining = self.lease_remaining_ms().await;
        // (partitions, records/s, bytes/s) per member.
        let mut load_by_member: HashMap<(Role, &MemberId), (u32, f64, f64)> = HashMap::new();
        for (key, assignment) in &snapshot.assignments {
            let (records, bytes) = snapshot
                .checkpoints
                .get(key)
                .map_or((0.0, 0.0), |c| (c.records_per_sec, c.bytes_per_sec));
            for member in [
                (Role::Fetcher, &assignment.fetcher),
                (Role::Writer, &assignment.writer),
            ] {
                let entry = load_by_member.entry(member).or_insert((0, 0.0, 0.0));
                entry.0 += 1;
                entry.1 += records;
                entry.2 += bytes;
            }
        }
        Ok(snapshot
            .members
            .values()
            .map(|info| {
                let (partitions, records_per_sec, bytes_per_sec) = load_by_member
                    .get(&(info.role, &info.id))
                    .copied()
                    .unwrap_or((0, 0.0, 0.0));
                Member {
                    id: info.id.to_string(),
                    role: info.role.to_string(),
                    address: info.address.clone(),
                    version: info.version.clone(),
                    leader: info.role == Role::Coordinator && leader_opt.as_ref() == Some(&info.id),
                    partitions,
                    lease_remaining_ms: lease_remaining
                        .get(&(info.role, info.id.clone()))
                        .copied()
                        .unwrap_or(-1),
                    records_per_sec,
                    bytes_per_sec,
                    drained: snapshot.is_drained(info.role, &info.id),
                    started_ms: info.started_ms,
                    metrics_url: metrics_url(info.metrics_address.as_deref()),
                }
            })
            .collect())
    }

    /// Time left on each member's lease (etcd counts in whole seconds).
    async fn lease_remaining_ms(&self) -> HashMap<(Role, MemberId), i64> {
        let mut client = self.client.clone();
        let mut remaining = HashMap::new();
        let Ok(response) = client
            .get(self.keys.members(), Some(GetOptions::new().with_prefix()))
            .await
        else {
            return remaining;
        };
        let mut ttl_by_lease: HashMap<i64, i64> = HashMap::new();
        for kv in response.kvs() {
            let Ok(info) = decode::<kmirror_common::schema::MemberInfo>(kv.key(), kv.value())
            else {
                continue;
            };
            let lease = kv.lease();
            if lease == 0 {
                continue;
            }
            let ttl = match ttl_by_lease.get(&lease) {
                Some(ttl) => *ttl,
                None => {
                    let ttl = match client.lease_time_to_live(lease, None).await {
                        Ok(answer) if answer.ttl() >= 0 => answer.ttl() * 1000,
                        _ => -1,
                    };
                    ttl_by_lease.insert(lease, ttl);
                    ttl
                }
            };
            remaining.insert((info.role, info.id), ttl);
        }
        remaining
    }

    pub async fn status(
        &self,
        request: StatusRequest,
    ) -> Result<Vec<FlowStatus>, CoordinatorError> {
        let only_opt = match request.flow.as_str() {
            "" => None,
            name => Some(FlowName::new(name)?),
        };
        let snapshot = self
            .read(Sections {
                clusters: true,
                flows: true,
                assignments: true,
                checkpoints: true,
                errors: true,
                flow_states: true,
                ..Sections::default()
            })
            .await?;
        if let Some(only) = &only_opt {
            if !snapshot.flows.contains_key(only) {
                return Err(not_found("flow", only));
            }
        }
        let flows = snapshot
            .flows
            .values()
            .filter(|flow| only_opt.as_ref().is_none_or(|only| &flow.name == only));
        Ok(join_all(flows.map(|flow| self.flow_status(flow, &snapshot))).await)
    }

    /// The elected coordinator's id, if one leads.
    pub async fn leader(&self) -> Option<MemberId> {
        elected_leader(&mut self.client.clone(), &self.keys).await
    }

    async fn flow_status(&self, flow: &FlowSpec, snapshot: &Snapshot) -> FlowStatus {
        let flow_state_opt = snapshot.flow_states.get(&flow.name);
        let keys = status_partitions(
            &flow.name,
            flow_state_opt,
            &snapshot.assignments,
            &snapshot.checkpoints,
            &snapshot.errors,
        );
        let source_client_opt = snapshot
            .clusters
            .get(&flow.source_cluster)
            .and_then(|spec| self.kafka.client(spec).ok());
        let watermarks = match source_client_opt {
            Some(source) => {
                source
                    .watermarks(
                        keys.iter()
                            .map(|key| (key.topic.clone(), key.partition))
                            .collect(),
                    )
                    .await
            }
            None => vec![None; keys.len()],
        };
        let partitions = keys
            .iter()
            .zip(watermarks)
            .map(|(key, watermarks_opt)| {
                partition_status(
                    flow,
                    key,
                    watermarks_opt,
                    snapshot.assignments.get(key),
                    snapshot.checkpoints.get(key),
                    snapshot.errors.get(key),
                )
            })
            .collect();
        flow_status(flow, flow_state_opt, &snapshot.checkpoints, partitions)
    }

    async fn read(&self, sections: Sections) -> Result<Snapshot, CoordinatorError> {
        read_snapshot(&mut self.client.clone(), &self.keys, sections).await
    }
}

fn already_exists(what: &'static str, name: &impl ToString) -> CoordinatorError {
    CoordinatorError::AlreadyExists {
        what,
        name: name.to_string(),
    }
}

fn not_found(what: &'static str, name: &impl ToString) -> CoordinatorError {
    CoordinatorError::NotFound {
        what,
        name: name.to_string(),
    }
}

fn cluster_message(spec: &ClusterSpec) -> Cluster {
    Cluster {
        name: spec.name.to_string(),
        bootstrap_servers: spec.bootstrap_servers.clone(),
        properties: kmirror_common::kafka::masked(&spec.properties)
            .into_iter()
            .collect(),
    }
}

/// Refuses to drain the last live, undrained member of a role: its partitions
/// would have nowhere to go.
fn refuse_draining_the_last_member(
    snapshot: &Snapshot,
    role: Role,
    id: &MemberId,
) -> Result<(), CoordinatorError> {
    if snapshot.is_drained(role, id) {
        return Ok(());
    }
    let live_undrained = snapshot
        .members_of(role)
        .filter(|member| !snapshot.is_drained(role, member));
    match guard::last_member_drain_refusal(role, id, live_undrained) {
        Some(refusal) => Err(CoordinatorError::Refused(refusal)),
        None => Ok(()),
    }
}

/// The /metrics URL of a member's registered HTTP address (`http://HOST:PORT`
/// or `HOST:PORT`); empty when it serves none.
fn metrics_url(address_opt: Option<&str>) -> String {
    match address_opt.map(str::trim) {
        None | Some("") => String::new(),
        Some(address) if address.contains("://") => {
            format!("{}/metrics", address.trim_end_matches('/'))
        }
        Some(address) => format!("http://{address}/metrics"),
    }
}

/// What a flow matches now, for the operator storing it.
struct FlowPreview {
    topics: Vec<TopicMatch>,
    warnings: Vec<String>,
}

/// A cluster's properties after an update that keeps what it does not set.
#[derive(Debug, Default, PartialEq, Eq)]
struct MergedProperties {
    properties: BTreeMap<String, String>,
    /// Stored keys kept because the update did not set them.
    kept: Vec<String>,
    removed: Vec<String>,
}

/// The stored properties, overridden by the given ones, without those to remove.
/// Err names a key to remove that is set nowhere (a typo would otherwise keep
/// the property silently).
fn merged_properties(
    stored_opt: Option<&BTreeMap<String, String>>,
    given: BTreeMap<String, String>,
    remove: &[String],
) -> Result<MergedProperties, String> {
    let stored = stored_opt.cloned().unwrap_or_default();
    let mut merged = MergedProperties::default();
    for key in remove {
        if !stored.contains_key(key) && !given.contains_key(key) {
            return Err(key.clone());
        }
    }
    for (key, value) in stored {
        if remove.contains(&key) {
            merged.removed.push(key);
        } else if !given.contains_key(&key) {
            merged.kept.push(key.clone());
            merged.properties.insert(key, value);
        }
    }
    for (key, value) in given {
        if !remove.contains(&key) {
            merged.properties.insert(key, value);
        }
    }
    Ok(merged)
}

/// How long a requested rebalance may take the leader to apply.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A stored flow from a requested one, every field checked.
pub fn flow_spec(flow: Flow) -> Result<FlowSpec, CoordinatorError> {
    let name = FlowName::new(flow.name)?;
    let source_cluster = ClusterName::new(flow.source_cluster)?;
    let dest_cluster = ClusterName::new(flow.dest_cluster)?;
    let invalid = |what: String| CoordinatorError::InvalidArgument(format!("flow {name}: {what}"));
    if flow.include.is_empty() {
        return Err(invalid("the include regex is empty".to_string()));
    }
    let exclude_opt = Some(flow.exclude).filter(|exclude| !exclude.is_empty());
    TopicFilter::new(&flow.include, exclude_opt.as_deref())?;
    let rename = match flow.rename_policy.as_str() {
        "" | "identity" => RenamePolicy::Identity,
        "prefix" => {
            let alias = match flow.rename_prefix.as_str() {
                "" => source_cluster.to_string(),
                alias => alias.to_string(),
            };
            let separator = match flow.rename_separator.as_str() {
                "" => ".".to_string(),
                separator => separator.to_string(),
            };
            if !is_topic_name(&format!("{alias}{separator}x")) {
                return Err(invalid(format!(
                    "prefix {alias:?} with separator {separator:?} does not make valid topic names"
                )));
            }
            RenamePolicy::Prefix { alias, separator }
        }
        "map" => {
            if flow.rename_map.is_empty() {
                return Err(invalid("the rename map is empty".to_string()));
            }
            let topics: BTreeMap<String, String> = flow.rename_map.into_iter().collect();
            if let Some((_, bad)) = topics.iter().find(|(_, dest)| !is_topic_name(dest)) {
                return Err(invalid(format!("{bad:?} is not a valid topic name")));
            }
            let mut seen = BTreeSet::new();
            if let Some((_, twice)) = topics.iter().find(|(_, dest)| !seen.insert(*dest)) {
                return Err(invalid(format!(
                    "two source topics map to destination topic {twice}"
                )));
            }
            RenamePolicy::Map { topics }
        }
        other => {
            return Err(invalid(format!(
                "unknown rename policy {other:?} (use identity, prefix or map)"
            )))
        }
    };
    if source_cluster == dest_cluster && rename == RenamePolicy::Identity {
        // Destination topics named like their sources: the flow would copy every
        // topic onto itself.
        return Err(invalid(format!(
            "source and destination are the same cluster {source_cluster}"
        )));
    }
    let start = match flow.start.as_str() {
        "" | "earliest" => StartPosition::Earliest,
        "latest" => StartPosition::Latest,
        "timestamp" if flow.start_timestamp_ms >= 0 => StartPosition::Timestamp {
            ms: flow.start_timestamp_ms,
        },
        "timestamp" => return Err(invalid("the start timestamp is negative".to_string())),
        other => {
            return Err(invalid(format!(
                "unknown start position {other:?} (use earliest, latest or timestamp)"
            )))
        }
    };
    let mut config_sync = ConfigSync::default();
    if let Some(enabled) = flow.sync_topic_configs {
        config_sync.enabled = enabled;
    }
    if flow.sync_topic_configs_exclude_set || !flow.sync_topic_configs_exclude.is_empty() {
        config_sync.exclude = flow.sync_topic_configs_exclude;
    }
    for pattern in &config_sync.exclude {
        regex::Regex::new(pattern)
            .map_err(|error| invalid(format!("invalid config exclusion {pattern:?}: {error}")))?;
    }
    Ok(FlowSpec {
        name,
        source_cluster,
        dest_cluster,
        include: flow.include,
        exclude: exclude_opt,
        created_ms: now_ms(),
        rename,
        start,
        config_sync,
        paused: false,
        until_caught_up: flow.until_caught_up,
    })
}

/// Kafka's topic name rules: 1 to 249 of letters, digits, '.', '_' and '-'.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub fn flow_message(spec: &FlowSpec, state_opt: Option<&FlowState>) -> Flow {
    let (rename_prefix, rename_separator, rename_map) = match &spec.rename {
        RenamePolicy::Identity => (String::new(), String::new(), HashMap::new()),
        RenamePolicy::Prefix { alias, separator } => {
            (alias.clone(), separator.clone(), HashMap::new())
        }
        RenamePolicy::Map { topics } => (
            String::new(),
            String::new(),
            topics.clone().into_iter().collect(),
        ),
    };
    let (start, start_timestamp_ms) = match spec.start {
        StartPosition::Earliest => ("earliest", 0),
        StartPosition::Latest => ("latest", 0),
        StartPosition::Timestamp { ms } => ("timestamp", ms),
    };
    Flow {
        name: spec.name.to_string(),
        source_cluster: spec.source_cluster.to_string(),
        dest_cluster: spec.dest_cluster.to_string(),
        include: spec.include.clone(),
        exclude: spec.exclude.clone().unwrap_or_default(),
        rename_policy: spec.rename.kind().to_string(),
        rename_prefix,
        rename_separator,
        rename_map,
        start: start.to_string(),
        start_timestamp_ms,
        until_caught_up: spec.until_caught_up,
        paused: spec.paused,
        sync_topic_configs: Some(spec.config_sync.enabled),
        sync_topic_configs_exclude: spec.config_sync.exclude.clone(),
        sync_topic_configs_exclude_set: true,
        phase: flow_phase(spec, state_opt).as_str().to_string(),
        created_ms: spec.created_ms,
    }
}

fn move_message(key: &PartitionKey, role: Role, from: &MemberId, to: &MemberId) -> PartitionMove {
    PartitionMove {
        flow: key.flow.to_string(),
        topic: key.topic.clone(),
        partition: key.partition,
        role: role.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The moves a tight rebalance of the running partitions would make: the
/// current assignments as the problem, built as a round with a rebalance request
/// builds it (live members that are not drained, measured rates, tolerance 0).
fn rebalance_moves(snapshot: &Snapshot, now_ms: i64) -> Vec<PartitionMove> {
    let previous: BTreeMap<PartitionKey, Assignment> = snapshot.assignments.clone();
    let partitions = previous
        .iter()
        .map(|(key, assignment)| carried(key, assignment))
        .collect();
    let mode = PlanningMode {
        rebalance: true,
        assigned_members_live: false,
    };
    let problem = Problem::from_snapshot(snapshot, partitions, mode, now_ms);
    plan(&problem, &previous)
        .moves(&previous)
        .iter()
        .map(|movement| move_message(&movement.key, movement.role, &movement.from, &movement.to))
        .collect()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_cluster(
        &self,
        request: Request<AddClusterRequest>,
    ) -> Result<Response<AddClusterResponse>, Status> {
        Ok(Response::new(
            AdminService::add_cluster(self, request.into_inner()).await?,
        ))
    }

    async fn delete_cluster(
        &self,
        request: Request<DeleteClusterRequest>,
    ) -> Result<Response<DeleteClusterResponse>, Status> {
        AdminService::delete_cluster(self, &request.into_inner().name).await?;
        Ok(Response::new(DeleteClusterResponse {}))
    }

    async fn list_clusters(
        &self,
        _request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        let clusters = AdminService::list_clusters(self).await?;
        Ok(Response::new(ListClustersResponse { clusters }))
    }

    async fn create_flow(
        &self,
        request: Request<CreateFlowRequest>,
    ) -> Result<Response<CreateFlowResponse>, Status> {
        Ok(Response::new(
            AdminService::create_flow(self, request.into_inner()).await?,
        ))
    }

    async fn list_flows(
        &self,
        _request: Request<ListFlowsRequest>,
    ) -> Result<Response<ListFlowsResponse>, Status> {
        let flows = AdminService::list_flows(self).await?;
        Ok(Response::new(ListFlowsResponse { flows }))
    }

    async fn delete_flow(
        &self,
        request: Request<DeleteFlowRequest>,
    ) -> Result<Response<DeleteFlowResponse>, Status> {
        AdminService::delete_flow(self, request.into_inner()).await?;
        Ok(Response::new(DeleteFlowResponse {}))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let flows = AdminService::status(self, request.into_inner()).await?;
        let leader = self
            .leader()
            .await
            .map(|id| id.to_string())
            .unwrap_or_default();
        Ok(Response::new(StatusResponse { flows, leader }))
    }

    async fn list_members(
        &self,
        _request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let members = AdminService::list_members(self).await?;
        Ok(Response::new(ListMembersResponse { members }))
    }

    async fn pause_flow(
        &self,
        request: Request<PauseFlowRequest>,
    ) -> Result<Response<PauseFlowResponse>, Status> {
        let flow = AdminService::pause_flow(self, &request.into_inner().name).await?;
        Ok(Response::new(PauseFlowResponse { flow: Some(flow) }))
    }

    async fn resume_flow(
        &self,
        request: Request<ResumeFlowRequest>,
    ) -> Result<Response<ResumeFlowResponse>, Status> {
        let flow = self.set_paused(&request.into_inner().name, false).await?;
        Ok(Response::new(ResumeFlowResponse { flow: Some(flow) }))
    }

    async fn list_assignments(
        &self,
        request: Request<ListAssignmentsRequest>,
    ) -> Result<Response<ListAssignmentsResponse>, Status> {
        let assignments = AdminService::list_assignments(self, request.into_inner()).await?;
        Ok(Response::new(ListAssignmentsResponse { assignments }))
    }

    async fn drain_member(
        &self,
        request: Request<DrainMemberRequest>,
    ) -> Result<Response<DrainMemberResponse>, Status> {
        Ok(Response::new(
            AdminService::drain_member(self, request.into_inner()).await?,
        ))
    }

    async fn rebalance(
        &self,
        request: Request<RebalanceRequest>,
    ) -> Result<Response<RebalanceResponse>, Status> {
        Ok(Response::new(
            AdminService::rebalance(self, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_replaced_cluster_keeps_the_properties_it_does_not_set() {
        let stored = properties(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "mirror"),
            ("compression.type", "lz4"),
        ]);
        let merged = merged_properties(
            Some(&stored),
            properties(&[("sasl.username", "other")]),
            &["compression.type".to_string()],
        )
        .unwrap();
        assert_eq!(
            merged,
            MergedProperties {
                properties: properties(&[
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.username", "other"),
                ]),
                kept: vec!["security.protocol".to_string()],
                removed: vec!["compression.type".to_string()],
            }
        );
    }

    #[test]
    fn removing_a_property_that_is_not_set_is_an_error() {
        assert_eq!(
            merged_properties(None, BTreeMap::new(), &["client.rack".to_string()]),
            Err("client.rack".to_string())
        );
    }

    #[test]
    fn metrics_urls_point_at_the_metrics_path() {
        assert_eq!(
            metrics_url(Some("http://10.0.0.1:9100")),
            "http://10.0.0.1:9100/metrics"
        );
        assert_eq!(
            metrics_url(Some("10.0.0.1:9100")),
            "http://10.0.0.1:9100/metrics"
        );
        assert_eq!(metrics_url(None), "");
    }
}
