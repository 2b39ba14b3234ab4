//! The admin API kmirrorctl talks to. Any coordinator serves it, leader or not:
//! writes to `clusters/` and `flows/` are create-if-absent transactions, and the
//! leader picks them up through its watch.
//!
//! `AdminService` and its gRPC trait live here; each call's work lives in the
//! module of what it is about:
//!
//! | module | calls |
//! | --- | --- |
//! | `clusters` | add, delete and list clusters (property merging) |
//! | `flows` | create (with its guard-rail preview), list, pause, resume, delete flows |
//! | `flow_spec` | a requested flow checked into a stored one, and back |
//! | `members` | list and drain members |
//! | `offsets` | translate source positions through the offset map |
//! | `group_offsets` | sync consumer groups' offsets to the destination, on request |
//! | `partitions` | reset a held partition's checkpoint |
//! | `rebalance` | rebalance, and its dry run |
//! | `status` | status and the assignment listing |
//! | `verify` | verify a flow: destination topics, configs, mirrored records |
//! | `reading` | Kafka reads the data calls share: the offset map, single records |

mod clusters;
mod flow_spec;
mod flows;
mod group_offsets;
mod members;
pub(crate) mod offsets;
mod partitions;
pub(crate) mod reading;
mod rebalance;
mod status;
mod verify;

use etcd_client::Client;
use kmirror_common::etcd::EtcdError;
use kmirror_common::schema::decode;
use kmirror_common::{FlowName, Keys};
use kmirror_proto::tonic::{self, Request, Response, Status};
use kmirror_proto::v1::admin_server::Admin;
use kmirror_proto::v1::{
    AddClusterRequest, AddClusterResponse, CreateFlowRequest, CreateFlowResponse,
    DeleteClusterRequest, DeleteClusterResponse, DeleteFlowRequest, DeleteFlowResponse,
    DrainMemberRequest, DrainMemberResponse, ListAssignmentsRequest, ListAssignmentsResponse,
    ListClustersRequest, ListClustersResponse, ListFlowsRequest, ListFlowsResponse,
    ListMembersRequest, ListMembersResponse, PauseFlowRequest, PauseFlowResponse, RebalanceRequest,
    RebalanceResponse, ResumeFlowRequest, ResumeFlowResponse, StatusRequest, StatusResponse,
    SyncGroupOffsetsRequest, SyncGroupOffsetsResponse, TranslateOffsetsRequest,
    TranslateOffsetsResponse,
};
use kmirror_proto::v1::{ResetPartitionRequest, ResetPartitionResponse};
use kmirror_proto::v1::{VerifyFlowRequest, VerifyFlowResponse};
use serde::de::DeserializeOwned;

use crate::error::CoordinatorError;
use crate::kafka::KafkaClients;
use crate::store::{read_snapshot, Sections, Snapshot};

pub use flow_spec::{flow_message, flow_spec};

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

    /// The chosen sections of the control state, at one revision.
    async fn read(&self, sections: Sections) -> Result<Snapshot, CoordinatorError> {
        read_snapshot(&mut self.client.clone(), &self.keys, sections).await
    }

    /// The members and what they run: live and drained members, assignments
    /// and the rates in the checkpoints (what the member listing, draining and
    /// rebalancing read).
    async fn read_members_and_load(&self) -> Result<Snapshot, CoordinatorError> {
        self.read(Sections {
            members: true,
            assignments: true,
            checkpoints: true,
            operator_requests: true,
            ..Sections::default()
        })
        .await
    }

    /// The snapshot a call about one flow or all of them reads (`flow` empty
    /// for all), with the flows always among its sections: the flow named, if
    /// any, must exist.
    async fn read_for_flow(
        &self,
        flow: &str,
        sections: Sections,
    ) -> Result<(Option<FlowName>, Snapshot), CoordinatorError> {
        let only_opt = match flow {
            "" => None,
            name => Some(FlowName::new(name)?),
        };
        let snapshot = self
            .read(Sections {
                flows: true,
                ..sections
            })
            .await?;
        if let Some(only) = &only_opt {
            if !snapshot.flows.contains_key(only) {
                return Err(not_found("flow", only));
            }
        }
        Ok((only_opt, snapshot))
    }

    /// One stored value and the revision it was last changed at (for a
    /// compare-and-swap over exactly what was read), or None when it is absent.
    async fn read_stored<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, CoordinatorError> {
        let response = self.client.clone().get(key, None).await?;
        let Some(kv) = response.kvs().first() else {
            return Ok(None);
        };
        let value = decode(kv.key(), kv.value()).map_err(EtcdError::from)?;
        Ok(Some((value, kv.mod_revision())))
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

    async fn translate_offsets(
        &self,
        request: Request<TranslateOffsetsRequest>,
    ) -> Result<Response<TranslateOffsetsResponse>, Status> {
        Ok(Response::new(
            AdminService::translate_offsets(self, request.into_inner()).await?,
        ))
    }

    async fn sync_group_offsets(
        &self,
        request: Request<SyncGroupOffsetsRequest>,
    ) -> Result<Response<SyncGroupOffsetsResponse>, Status> {
        Ok(Response::new(
            AdminService::sync_group_offsets(self, request.into_inner()).await?,
        ))
    }

    async fn reset_partition(
        &self,
        request: Request<ResetPartitionRequest>,
    ) -> Result<Response<ResetPartitionResponse>, Status> {
        Ok(Response::new(
            AdminService::reset_partition(self, request.into_inner()).await?,
        ))
    }

    async fn verify_flow(
        &self,
        request: Request<VerifyFlowRequest>,
    ) -> Result<Response<VerifyFlowResponse>, Status> {
        Ok(Response::new(
            AdminService::verify_flow(self, request.into_inner()).await?,
        ))
    }
}
