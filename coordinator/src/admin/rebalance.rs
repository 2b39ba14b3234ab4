//! Rebalancing: the moves a tight rebalance would make (the dry run plans them
//! here, as a round would), or a request the leader applies, reported as the
//! moves it made.

use std::collections::BTreeMap;
use std::time::Duration;

use kmirror_common::schema::{encode, Assignment, RebalanceRequest as StoredRebalanceRequest};
use kmirror_common::{now_ms, MemberId, PartitionKey, Role};
use kmirror_proto::v1::{PartitionMove, RebalanceRequest, RebalanceResponse};

use super::AdminService;
use crate::error::CoordinatorError;
use crate::planner::{plan, Problem};
use crate::round::planning::PlanningMode;
use crate::round::topics::carried;
use crate::store::{elected_leader, Snapshot};

/// How long a requested rebalance may take the leader to apply.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);

impl AdminService {
    /// The moves that even out the running partitions (tolerance 0); with
    /// `dry_run` false, asks the leader to apply them and waits until it did.
    pub async fn rebalance(
        &self,
        request: RebalanceRequest,
    ) -> Result<RebalanceResponse, CoordinatorError> {
        let snapshot = self.read_members_and_load().await?;
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
        let after = self.read_members_and_load().await?;
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
