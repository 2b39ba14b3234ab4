//! Consumer-group offset sync on request (`kmirrorctl offsets sync`, the last
//! step of `kmirrorctl failover`): the same sync the leader runs periodically,
//! with the map read once.

use kmirror_common::offset_map;
use kmirror_common::FlowName;
use kmirror_proto::v1::{SyncGroupOffsetsRequest, SyncGroupOffsetsResponse};

use super::{not_found, AdminService};
use crate::error::CoordinatorError;
use crate::group_sync::decide::SyncOptions;
use crate::group_sync::kafka::MapReadOnce;
use crate::group_sync::{sync_flow, GroupSelection};
use crate::store::Sections;

impl AdminService {
    pub async fn sync_group_offsets(
        &self,
        request: SyncGroupOffsetsRequest,
    ) -> Result<SyncGroupOffsetsResponse, CoordinatorError> {
        let flow_name = FlowName::new(request.flow.as_str())?;
        let snapshot = self
            .read(Sections {
                flows: true,
                clusters: true,
                ..Sections::default()
            })
            .await?;
        let flow = snapshot
            .flows
            .get(&flow_name)
            .cloned()
            .ok_or_else(|| not_found("flow", &flow_name))?;
        let cluster = |name| {
            snapshot
                .clusters
                .get(name)
                .cloned()
                .ok_or_else(|| not_found("cluster", name))
        };
        let source = cluster(&flow.source_cluster)?;
        let dest = cluster(&flow.dest_cluster)?;
        let selection = GroupSelection::for_flow(&flow, &request.groups)?;
        let options = SyncOptions {
            dry_run: request.dry_run,
            allow_backwards: request.allow_backwards,
        };
        let map_topic = offset_map::map_topic(self.keys.fleet());
        let timeout = self.kafka.timeout();
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
            return Err(CoordinatorError::NotFound {
                what: "consumer group",
                name: format!(
                    "matching {:?} with committed offsets on the topics flow {} mirrors from cluster {}",
                    if request.groups.is_empty() {
                        "the flow's group sync"
                    } else {
                        request.groups.as_str()
                    },
                    flow_name,
                    snapshot
                        .flows
                        .get(&flow_name)
                        .map(|flow| flow.source_cluster.to_string())
                        .unwrap_or_default()
                ),
            });
        }
        Ok(SyncGroupOffsetsResponse { groups, map_topic })
    }
}
