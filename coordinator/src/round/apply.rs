//! The round's writes: its [`Decision`] as etcd operations, written in
//! transactions guarded by the leadership key.

use etcd_client::{Client, DeleteOptions, LeaderKey, TxnOp};
use kmirror_common::schema::encode;
use kmirror_common::{FlowName, Keys};

use crate::error::CoordinatorError;
use crate::round::decide::{AssignmentWrite, Decision};
use crate::store::fenced_write;

/// One etcd write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(String, Vec<u8>),
    Delete(String),
    DeletePrefix(String),
}

impl Write {
    fn into_op(self) -> TxnOp {
        match self {
            Write::Put(key, value) => TxnOp::put(key, value, None),
            Write::Delete(key) => TxnOp::delete(key, None),
            Write::DeletePrefix(prefix) => {
                TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix()))
            }
        }
    }
}

/// The decision's writes, in order: start positions before the assignments that
/// read them, and a deleted flow's assignments before its checkpoints.
pub fn writes(keys: &Keys, decision: &Decision) -> Vec<Write> {
    let mut writes = Vec::new();
    for (key, checkpoint) in &decision.initial_checkpoints {
        writes.push(Write::Put(keys.checkpoint(key), encode(checkpoint)));
    }
    if decision.rebalance_served {
        writes.push(Write::Delete(keys.rebalance_request()));
    }
    for write in &decision.assignments {
        writes.push(match write {
            AssignmentWrite::Put(key, assignment) => {
                Write::Put(keys.assignment(key), encode(assignment))
            }
            AssignmentWrite::Delete(key) => Write::Delete(keys.assignment(key)),
        });
    }
    for flow in &decision.deleted_flows {
        writes.extend(flow_deletion(keys, flow));
    }
    for (role, id) in &decision.departed_drains {
        writes.push(Write::Delete(keys.drained_member(*role, id)));
    }
    for (flow, state) in &decision.flow_states {
        writes.push(Write::Put(keys.flow_state(flow), encode(state)));
    }
    writes
}

/// Everything a deleted flow leaves behind. Assignments go first so fetchers stop
/// before their checkpoints disappear.
pub fn flow_deletion(keys: &Keys, flow: &FlowName) -> Vec<Write> {
    vec![
        Write::DeletePrefix(keys.flow_assignments(flow)),
        Write::DeletePrefix(keys.flow_checkpoints(flow)),
        Write::DeletePrefix(format!("{}{flow}/", keys.errors())),
        Write::DeletePrefix(keys.flow_holds(flow)),
        Write::Delete(keys.flow_state(flow)),
        Write::Delete(keys.group_sync_report(flow)),
    ]
}

/// Writes the decision unless another coordinator leads (`Err(Deposed)`).
pub async fn apply(
    client: &mut Client,
    leader: &LeaderKey,
    keys: &Keys,
    decision: &Decision,
) -> Result<(), CoordinatorError> {
    let operations = writes(keys, decision)
        .into_iter()
        .map(Write::into_op)
        .collect();
    fenced_write(client, leader, operations).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::test_support::{assignment, checkpoint, key};

    #[test]
    fn start_positions_are_written_before_assignments_and_a_deleted_flows_assignments_before_its_checkpoints(
    ) {
        let keys = Keys::new("prod");
        let gone = FlowName::new("gone").unwrap();
        let decision = Decision {
            initial_checkpoints: vec![(key("dr", "orders", 0), checkpoint(5))],
            rebalance_served: true,
            assignments: vec![AssignmentWrite::Put(key("dr", "orders", 0), assignment())],
            deleted_flows: vec![gone.clone()],
            ..Decision::default()
        };
        let written = writes(&keys, &decision);
        let position = |wanted: &Write| written.iter().position(|write| write == wanted).unwrap();
        let start = position(&Write::Put(
            keys.checkpoint(&key("dr", "orders", 0)),
            encode(&checkpoint(5)),
        ));
        let assigned = position(&Write::Put(
            keys.assignment(&key("dr", "orders", 0)),
            encode(&assignment()),
        ));
        let request = position(&Write::Delete(keys.rebalance_request()));
        let gone_assignments = position(&Write::DeletePrefix(keys.flow_assignments(&gone)));
        let gone_checkpoints = position(&Write::DeletePrefix(keys.flow_checkpoints(&gone)));
        assert!(start < assigned && request < assigned);
        assert!(gone_assignments < gone_checkpoints);
        assert!(written.contains(&Write::Delete(keys.flow_state(&gone))));
        assert!(written.contains(&Write::Delete(keys.group_sync_report(&gone))));
    }
}
