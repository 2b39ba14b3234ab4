//! The admin API kmirrorctl talks to. Any coordinator serves it, leader or not:
//! writes to `clusters/` and `flows/` are create-if-absent transactions, and the
//! leader picks them up through its watch.

use std::collections::HashMap;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use futures::future::join_all;
use kmirror_common::schema::{encode, ClusterSpec, FlowSpec};
use kmirror_common::{now_ms, ClusterName, FlowName, Keys, MemberId, Role};
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::admin_server::Admin;
use kmirror_proto::v1::{
    AddClusterRequest, AddClusterResponse, Cluster, CreateFlowRequest, CreateFlowResponse,
    DeleteFlowRequest, DeleteFlowResponse, Flow, FlowStatus, ListClustersRequest,
    ListClustersResponse, ListFlowsRequest, ListFlowsResponse, ListMembersRequest,
    ListMembersResponse, Member, StatusRequest, StatusResponse,
};
use tracing::info;

use crate::error::CoordinatorError;
use crate::kafka::{ClusterClient, KafkaClients};
use crate::status::{flow_status, partition_status, status_partitions};
use crate::store::{elected_leader, read_snapshot, Sections, Snapshot};
use crate::topic_filter::TopicFilter;

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
    ) -> Result<Cluster, CoordinatorError> {
        let cluster = request.cluster.ok_or_else(|| {
            CoordinatorError::InvalidArgument("the cluster is missing".to_string())
        })?;
        let name = ClusterName::new(cluster.name)?;
        let bootstrap_servers = cluster.bootstrap_servers.trim().to_string();
        if bootstrap_servers.is_empty() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: the bootstrap address is empty"
            )));
        }
        if cluster.properties.contains_key("bootstrap.servers") {
            return Err(CoordinatorError::InvalidArgument(format!(
                "cluster {name}: give bootstrap.servers as the bootstrap address, not as a property"
            )));
        }
        let spec = ClusterSpec {
            name: name.clone(),
            bootstrap_servers,
            properties: cluster.properties.into_iter().collect(),
        };
        let mut client = self.client.clone();
        let key = self.keys.cluster(&name);
        if !request.replace && client.get(key.as_str(), None).await?.count() > 0 {
            return Err(already_exists("cluster", &name));
        }
        // A cluster is only stored once it answers: a typo in the address fails here,
        // not later in a flow.
        let probe = ClusterClient::build(&spec, self.kafka.timeout())?;
        let reachable = probe.list_topics().await;
        probe.dispose();
        reachable?;

        let put = TxnOp::put(key.as_str(), encode(&spec), None);
        if request.replace {
            client.txn(Txn::new().and_then([put])).await?;
        } else {
            let absent = Compare::create_revision(key.as_str(), CompareOp::Equal, 0);
            let response = client
                .txn(Txn::new().when([absent]).and_then([put]))
                .await?;
            if !response.succeeded() {
                return Err(already_exists("cluster", &name));
            }
        }
        info!(cluster = %name, bootstrap = %spec.bootstrap_servers, replace = request.replace, "stored cluster");
        Ok(cluster_message(&spec))
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

    pub async fn create_flow(&self, request: CreateFlowRequest) -> Result<Flow, CoordinatorError> {
        let flow = request
            .flow
            .ok_or_else(|| CoordinatorError::InvalidArgument("the flow is missing".to_string()))?;
        let name = FlowName::new(flow.name)?;
        let source_cluster = ClusterName::new(flow.source_cluster)?;
        let dest_cluster = ClusterName::new(flow.dest_cluster)?;
        if flow.include.is_empty() {
            return Err(CoordinatorError::InvalidArgument(format!(
                "flow {name}: the include regex is empty"
            )));
        }
        let exclude_opt = Some(flow.exclude).filter(|exclude| !exclude.is_empty());
        TopicFilter::new(&flow.include, exclude_opt.as_deref())?;
        if source_cluster == dest_cluster {
            // Destination topics are named like their sources: the flow would copy
            // every topic onto itself.
            return Err(CoordinatorError::InvalidArgument(format!(
                "flow {name}: source and destination are the same cluster {source_cluster}"
            )));
        }
        let spec = FlowSpec {
            name: name.clone(),
            source_cluster,
            dest_cluster,
            include: flow.include,
            exclude: exclude_opt,
            created_ms: now_ms(),
        };

        let mut client = self.client.clone();
        let flow_key = self.keys.flow(&name);
        let source_key = self.keys.cluster(&spec.source_cluster);
        let dest_key = self.keys.cluster(&spec.dest_cluster);
        // The clusters must exist at the moment the flow is stored, not just when
        // they were checked.
        let conditions = [
            Compare::create_revision(flow_key.as_str(), CompareOp::Equal, 0),
            Compare::create_revision(source_key.as_str(), CompareOp::Greater, 0),
            Compare::create_revision(dest_key.as_str(), CompareOp::Greater, 0),
        ];
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
                [flows, _, _] if *flows > 0 => already_exists("flow", &name),
                [_, 0, _] => not_found("source cluster", &spec.source_cluster),
                _ => not_found("destination cluster", &spec.dest_cluster),
            });
        }
        info!(flow = %name, source = %spec.source_cluster, dest = %spec.dest_cluster, include = %spec.include, "created flow");
        Ok(flow_message(&spec))
    }

    pub async fn list_flows(&self) -> Result<Vec<Flow>, CoordinatorError> {
        let snapshot = self
            .read(Sections {
                flows: true,
                ..Sections::default()
            })
            .await?;
        Ok(snapshot.flows.values().map(flow_message).collect())
    }

    pub async fn delete_flow(&self, request: DeleteFlowRequest) -> Result<(), CoordinatorError> {
        let name = FlowName::new(request.name)?;
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
                ..Sections::default()
            })
            .await?;
        let leader_opt = elected_leader(&mut self.client.clone(), &self.keys).await;
        let mut partitions_by_member: HashMap<(Role, &MemberId), u32> = HashMap::new();
        for assignment in snapshot.assignments.values() {
            *partitions_by_member
                .entry((Role::Fetcher, &assignment.fetcher))
                .or_insert(0) += 1;
            *partitions_by_member
                .entry((Role::Writer, &assignment.writer))
                .or_insert(0) += 1;
        }
        Ok(snapshot
            .members
            .values()
            .map(|info| Member {
                id: info.id.to_string(),
                role: info.role.to_string(),
                address: info.address.clone(),
                version: info.version.clone(),
                leader: info.role == Role::Coordinator && leader_opt.as_ref() == Some(&info.id),
                partitions: partitions_by_member
                    .get(&(info.role, &info.id))
                    .copied()
                    .unwrap_or(0),
            })
            .collect())
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
        flow_status(flow, flow_state_opt, partitions)
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

fn flow_message(spec: &FlowSpec) -> Flow {
    Flow {
        name: spec.name.to_string(),
        source_cluster: spec.source_cluster.to_string(),
        dest_cluster: spec.dest_cluster.to_string(),
        include: spec.include.clone(),
        exclude: spec.exclude.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_cluster(
        &self,
        request: Request<AddClusterRequest>,
    ) -> Result<Response<AddClusterResponse>, Status> {
        let cluster = AdminService::add_cluster(self, request.into_inner()).await?;
        Ok(Response::new(AddClusterResponse {
            cluster: Some(cluster),
        }))
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
        let flow = AdminService::create_flow(self, request.into_inner()).await?;
        Ok(Response::new(CreateFlowResponse { flow: Some(flow) }))
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
        Ok(Response::new(StatusResponse { flows }))
    }

    async fn list_members(
        &self,
        _request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let members = AdminService::list_members(self).await?;
        Ok(Response::new(ListMembersResponse { members }))
    }
}
