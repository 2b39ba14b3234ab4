//! Consumer-group offset sync on request (`kmirrorctl offsets sync`, the last
//! step of `kmirrorctl failover`): the same sync the leader runs periodically,
//! with the map read once.

use kmirror_common::offset_map;
use kmirror_proto::v1::{SyncGroupOffsetsRequest, SyncGroupOffsetsResponse};

use super::reading::FlowClusters;
use super::AdminService;
use crate::error::CoordinatorError;
use crate::group_sync::decide::SyncOptions;
use crate::group_sync::kafka::MapReadOnce;
use crate::group_sync::{sync_flow, GroupSelection};

impl AdminService {
    pub async fn sync_group_offsets(
        &self,
        request: SyncGroupOffsetsRequest,
    ) -> Result<SyncGroupOffsetsResponse, CoordinatorError> {
        let FlowClusters { flow, source, dest } = self.flow_with_clusters(&request.flow).await?;
        let selection = GroupSelection::for_flow(&flow, &request.groups)?;
        let options = SyncOptions {
            dry_run: request.dry_run,
            allow_backwards: request.allow_backwards,
        };
        let map_topic = offset_map::map_topic(self.keys.fleet());
        let timeout = self.kafka.timeout();
        let (flow_name, source_cluster) = (flow.name.clone(), flow.source_cluster.clone());
        let topic = map_topic.clone();
        let groups = tokio::task::spawn_blocking(move || {
            sync_flow(
                &flow,
                &source,
                &dest,
                &selection,
                options,
                &mut MapReadOnce,
                &topic,
                timeout,
            )
        })
        .await
        .map_err(|error| {
            CoordinatorError::InvalidArgument(format!("group sync failed: {error}"))
        })??;
        if groups.is_empty() {
            let selected = match request.groups.as_str() {
                "" => "the flow's group sync",
                groups => groups,
            };
            return Err(CoordinatorError::NotFound {
                what: "consumer group",
                name: format!(
                    "matching {selected:?} with committed offsets on the topics flow {flow_name} mirrors from cluster {source_cluster}"
                ),
            });
        }
        Ok(SyncGroupOffsetsResponse { groups, map_topic })
    }
}
