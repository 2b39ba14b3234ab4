//! Members: the listing (load, lease time left, metrics address) and draining
//! one, which the guard rails refuse for the last live member of a role.

use std::collections::HashMap;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use kmirror_common::schema::{decode, encode, Drain, MemberInfo};
use kmirror_common::{now_ms, MemberId, Role};
use kmirror_proto::v1::{DrainMemberRequest, DrainMemberResponse, Member};
use tracing::info;

use super::{not_found, AdminService};
use crate::error::CoordinatorError;
use crate::guard;
use crate::store::{elected_leader, Snapshot};

impl AdminService {
    /// Marks a member drained (or not): the leader moves its partitions away and
    /// gives it nothing new.
    pub async fn drain_member(
        &self,
        request: DrainMemberRequest,
    ) -> Result<DrainMemberResponse, CoordinatorError> {
        let id = MemberId::new(request.id)?;
        let snapshot = self.read_members_and_load().await?;
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

    pub async fn list_members(&self) -> Result<Vec<Member>, CoordinatorError> {
        let snapshot = self.read_members_and_load().await?;
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
            let Ok(info) = decode::<MemberInfo>(kv.key(), kv.value()) else {
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

#[cfg(test)]
mod tests {
    use super::*;

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
