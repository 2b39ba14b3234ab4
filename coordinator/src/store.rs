//! The coordinator's view of etcd: consistent snapshots of the control state, and
//! the leader's fenced writes.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Client, Compare, CompareOp, GetOptions, LeaderKey, Txn, TxnOp, TxnOpResponse};
use kmirror_common::schema::{
    decode, Assignment, Checkpoint, ClusterSpec, FlowSpec, FlowState, GroupSyncReport, MemberInfo,
    PartitionError, PartitionHold, RebalanceRequest, Undeliverable,
};
use kmirror_common::{ClusterName, FlowName, Keys, MemberId, PartitionKey, Role};
use serde::Deserialize;
use tracing::warn;

use crate::error::CoordinatorError;

/// etcd refuses transactions with more than 128 operations by default; stay well below.
pub const MAX_TXN_OPS: usize = 100;

/// What to read in a snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sections {
    pub clusters: bool,
    pub flows: bool,
    pub members: bool,
    pub assignments: bool,
    pub checkpoints: bool,
    pub errors: bool,
    pub flow_states: bool,
    /// Drained members and a pending rebalance request.
    pub operator_requests: bool,
}

#[derive(Debug, Clone, Copy)]
enum Section {
    Clusters,
    Flows,
    Members,
    Assignments,
    Checkpoints,
    Errors,
    FlowStates,
    GroupSync,
    Drained,
    Rebalance,
    Undeliverable,
    Holds,
}

/// Control state read in one etcd transaction, so every part is from the same revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub clusters: BTreeMap<ClusterName, ClusterSpec>,
    pub flows: BTreeMap<FlowName, FlowSpec>,
    pub members: BTreeMap<(Role, MemberId), MemberInfo>,
    pub assignments: BTreeMap<PartitionKey, Assignment>,
    pub checkpoints: BTreeMap<PartitionKey, Checkpoint>,
    pub errors: BTreeMap<PartitionKey, PartitionError>,
    pub flow_states: BTreeMap<FlowName, FlowState>,
    /// What each flow's last consumer-group offset sync did, read with the flow states.
    pub group_sync: BTreeMap<FlowName, GroupSyncReport>,
    /// Members an operator drained.
    pub drained: BTreeSet<(Role, MemberId)>,
    pub rebalance_opt: Option<RebalanceRequest>,
    /// Writers that cannot deliver to a destination cluster, read with the members.
    pub undeliverable: BTreeMap<(MemberId, ClusterName), Undeliverable>,
    /// Partitions held until an operator resets them, read with the checkpoints.
    pub holds: BTreeMap<PartitionKey, PartitionHold>,
}

impl Snapshot {
    /// Live members of a role.
    pub fn members_of(&self, role: Role) -> impl Iterator<Item = &MemberId> {
        self.members
            .keys()
            .filter(move |(member_role, _)| *member_role == role)
            .map(|(_, id)| id)
    }

    pub fn is_drained(&self, role: Role, id: &MemberId) -> bool {
        self.drained.contains(&(role, id.clone()))
    }
}

/// Reads the chosen sections at one revision. Values that cannot be decoded are
/// logged and skipped: one bad key must not stop the fleet.
pub async fn read_snapshot(
    client: &mut Client,
    keys: &Keys,
    sections: Sections,
) -> Result<Snapshot, CoordinatorError> {
    let wanted: Vec<(Section, String)> = [
        (sections.clusters, Section::Clusters, keys.clusters()),
        (sections.flows, Section::Flows, keys.flows()),
        (sections.members, Section::Members, keys.members()),
        (
            sections.members,
            Section::Undeliverable,
            keys.undeliverable(),
        ),
        (
            sections.assignments,
            Section::Assignments,
            keys.assignments(),
        ),
        (
            sections.checkpoints,
            Section::Checkpoints,
            keys.checkpoints(),
        ),
        (sections.checkpoints, Section::Holds, keys.holds()),
        (sections.errors, Section::Errors, keys.errors()),
        (
            sections.flow_states,
            Section::FlowStates,
            keys.flow_states(),
        ),
        (
            sections.flow_states,
            Section::GroupSync,
            keys.group_sync_reports(),
        ),
        (sections.operator_requests, Section::Drained, keys.drained()),
        (
            sections.operator_requests,
            Section::Rebalance,
            keys.rebalance_request(),
        ),
    ]
    .into_iter()
    .filter(|(read, _, _)| *read)
    .map(|(_, section, prefix)| (section, prefix))
    .collect();
    let operations: Vec<TxnOp> = wanted
        .iter()
        .map(|(_, prefix)| TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix())))
        .collect();
    let response = client.txn(Txn::new().and_then(operations)).await?;
    let mut snapshot = Snapshot {
        revision: response
            .header()
            .map(|header| header.revision())
            .unwrap_or(0),
        ..Snapshot::default()
    };
    // One response per operation, in order.
    for ((section, prefix), op_response) in wanted.iter().zip(response.op_responses()) {
        let TxnOpResponse::Get(get) = op_response else {
            continue;
        };
        for kv in get.kvs() {
            let (key, value) = (kv.key(), kv.value());
            match section {
                Section::Clusters => {
                    insert_named(&mut snapshot.clusters, key, value, ClusterName::new)
                }
                Section::Flows => insert_named(&mut snapshot.flows, key, value, FlowName::new),
                Section::Members => {
                    if let Some(info) = decode_or_warn::<MemberInfo>(key, value) {
                        snapshot.members.insert((info.role, info.id.clone()), info);
                    }
                }
                Section::Assignments => {
                    insert_partition(&mut snapshot.assignments, keys, prefix, key, value)
                }
                Section::Checkpoints => {
                    insert_partition(&mut snapshot.checkpoints, keys, prefix, key, value)
                }
                Section::Errors => insert_partition(&mut snapshot.errors, keys, prefix, key, value),
                Section::Holds => insert_partition(&mut snapshot.holds, keys, prefix, key, value),
                Section::FlowStates => {
                    insert_named(&mut snapshot.flow_states, key, value, FlowName::new)
                }
                Section::GroupSync => {
                    insert_named(&mut snapshot.group_sync, key, value, FlowName::new)
                }
                Section::Drained => {
                    if let Some(drained) = parse_drained(prefix, key) {
                        snapshot.drained.insert(drained);
                    }
                }
                Section::Undeliverable => {
                    if let (Some(mark), Some(undeliverable)) =
                        (keys.parse_undeliverable(key), decode_or_warn(key, value))
                    {
                        snapshot.undeliverable.insert(mark, undeliverable);
                    }
                }
                Section::Rebalance => {
                    // The prefix read also returns longer keys; only the exact one counts.
                    if key == prefix.as_bytes() {
                        snapshot.rebalance_opt = decode_or_warn(key, value);
                    }
                }
            }
        }
    }
    Ok(snapshot)
}

/// `(role, id)` out of a `drained/<role>/<id>` key.
fn parse_drained(prefix: &str, key: &[u8]) -> Option<(Role, MemberId)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (role, id) = rest.split_once('/')?;
    let role = match role {
        "coordinator" => Role::Coordinator,
        "fetcher" => Role::Fetcher,
        "writer" => Role::Writer,
        _ => return None,
    };
    Some((role, MemberId::new(id).ok()?))
}

fn decode_or_warn<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Option<T> {
    match decode(key, value) {
        Ok(decoded) => Some(decoded),
        Err(error) => {
            warn!(key = %error.key, error = %error.source, "skipping undecodable etcd value");
            None
        }
    }
}

fn insert_named<N: Ord, T: for<'de> Deserialize<'de>, E>(
    target: &mut BTreeMap<N, T>,
    key: &[u8],
    value: &[u8],
    parse_name: impl Fn(String) -> Result<N, E>,
) {
    let Some(name) =
        Keys::last_segment(key).and_then(|segment| parse_name(segment.to_string()).ok())
    else {
        warn!(key = %String::from_utf8_lossy(key), "skipping etcd key with an invalid name");
        return;
    };
    if let Some(decoded) = decode_or_warn(key, value) {
        target.insert(name, decoded);
    }
}

fn insert_partition<T: for<'de> Deserialize<'de>>(
    target: &mut BTreeMap<PartitionKey, T>,
    keys: &Keys,
    prefix: &str,
    key: &[u8],
    value: &[u8],
) {
    let Some(partition) = keys.parse_partition_key(prefix, key) else {
        warn!(key = %String::from_utf8_lossy(key), "skipping etcd key that names no partition");
        return;
    };
    if let Some(decoded) = decode_or_warn(key, value) {
        target.insert(partition, decoded);
    }
}

/// Applies the leader's writes, each transaction guarded by the leadership key, in
/// chunks of at most [`MAX_TXN_OPS`]. A failed guard means another coordinator
/// leads: nothing of that chunk (or any later one) is written.
pub async fn fenced_write(
    client: &mut Client,
    leader: &LeaderKey,
    operations: Vec<TxnOp>,
) -> Result<(), CoordinatorError> {
    for chunk in operations.chunks(MAX_TXN_OPS) {
        let guard = Compare::create_revision(leader.key(), CompareOp::Equal, leader.rev());
        let response = client
            .txn(Txn::new().when([guard]).and_then(chunk.to_vec()))
            .await?;
        if !response.succeeded() {
            return Err(CoordinatorError::Deposed);
        }
    }
    Ok(())
}

/// The id of the elected coordinator, if there is one.
pub async fn elected_leader(client: &mut Client, keys: &Keys) -> Option<MemberId> {
    match client.leader(keys.election()).await {
        Ok(response) => response
            .kv()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok())
            .and_then(|id| MemberId::new(id).ok()),
        // etcd answers "election: no leader" as an error.
        Err(_) => None,
    }
}
