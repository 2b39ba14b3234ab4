//! Status reads: each flow's partitions with their positions, lag and errors
//! (watermarks read from the source), the assignments, the elected leader.

use futures::future::join_all;
use kmirror_common::schema::FlowSpec;
use kmirror_common::MemberId;
use kmirror_proto::v1::{AssignmentInfo, FlowStatus, ListAssignmentsRequest, StatusRequest};

use super::AdminService;
use crate::error::CoordinatorError;
use crate::status::{add_group_sync, flow_status, mark_held, partition_status, status_partitions};
use crate::store::{elected_leader, Sections, Snapshot};

impl AdminService {
    pub async fn list_assignments(
        &self,
        request: ListAssignmentsRequest,
    ) -> Result<Vec<AssignmentInfo>, CoordinatorError> {
        let sections = Sections {
            assignments: true,
            checkpoints: true,
            ..Sections::default()
        };
        let (only_opt, snapshot) = self.read_for_flow(&request.flow, sections).await?;
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

    pub async fn status(
        &self,
        request: StatusRequest,
    ) -> Result<Vec<FlowStatus>, CoordinatorError> {
        let sections = Sections {
            clusters: true,
            assignments: true,
            checkpoints: true,
            errors: true,
            flow_states: true,
            ..Sections::default()
        };
        let (only_opt, snapshot) = self.read_for_flow(&request.flow, sections).await?;
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
        let mut keys = status_partitions(
            &flow.name,
            flow_state_opt,
            &snapshot.assignments,
            &snapshot.checkpoints,
            &snapshot.errors,
        );
        // A held partition is shown whatever else is known of it.
        keys.extend(
            snapshot
                .holds
                .keys()
                .filter(|key| key.flow == flow.name)
                .cloned(),
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
                let mut row = partition_status(
                    flow,
                    key,
                    watermarks_opt,
                    snapshot.assignments.get(key),
                    snapshot.checkpoints.get(key),
                    snapshot.errors.get(key),
                );
                if let Some(hold) = snapshot.holds.get(key) {
                    mark_held(&mut row, hold);
                }
                row
            })
            .collect();
        let mut status = flow_status(flow, flow_state_opt, &snapshot.checkpoints, partitions);
        add_group_sync(&mut status, snapshot.group_sync.get(&flow.name));
        status
    }
}
