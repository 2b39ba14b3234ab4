//! `members`, `drain`, `undrain` and `rebalance`: the fleet's members and how
//! partitions spread over them.

use std::time::{Duration, Instant};

use kmirror_proto::v1::{DrainMemberRequest, ListMembersRequest, Member, RebalanceRequest};

use super::failure::Failure;
use super::Ctl;
use crate::output::{
    members_text, moves_text, render, MemberJson, MembersJson, MoveJson, RebalanceJson,
};

impl Ctl {
    /// `members`: every registered member with its load.
    pub(super) async fn members(&mut self) -> Result<String, Failure> {
        let members = self.list_members().await?;
        let json = MembersJson {
            members: members.iter().map(MemberJson::from).collect(),
        };
        Ok(render(self.format, &json, |wide| {
            members_text(&members, wide)
        }))
    }

    async fn list_members(&mut self) -> Result<Vec<Member>, Failure> {
        Ok(self
            .client
            .list_members(ListMembersRequest {})
            .await
            .map_err(|status| self.failure("cannot list members", status))?
            .into_inner()
            .members)
    }

    pub(super) async fn drain(
        &mut self,
        member: String,
        no_wait: bool,
        timeout: Duration,
    ) -> Result<String, Failure> {
        let answer = self
            .client
            .drain_member(DrainMemberRequest {
                id: member.clone(),
                undo: false,
            })
            .await
            .map_err(|status| self.failure(format!("cannot drain member {member}"), status))?
            .into_inner();
        if no_wait {
            return Ok(self.done(
                &answer.role,
                &member,
                "drained (its partitions are moving away)",
            ));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let members = self.list_members().await?;
            let held = members
                .iter()
                .find(|candidate| candidate.id == member && candidate.role == answer.role)
                .map(|candidate| candidate.partitions);
            match held {
                None | Some(0) => {
                    return Ok(self.done(
                        &answer.role,
                        &member,
                        "drained: it holds no partition and may stop now",
                    ))
                }
                Some(count) if Instant::now() >= deadline => {
                    return Err(Failure {
                        what: format!("cannot drain member {member}"),
                        cause: format!(
                            "it still holds {count} partition(s) after {} (are other members of its role live?)",
                            humantime::format_duration(timeout)
                        ),
                    })
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    pub(super) async fn undrain(&mut self, member: String) -> Result<String, Failure> {
        let answer = self
            .client
            .drain_member(DrainMemberRequest {
                id: member.clone(),
                undo: true,
            })
            .await
            .map_err(|status| self.failure(format!("cannot undrain member {member}"), status))?
            .into_inner();
        Ok(self.done(&answer.role, &member, "undrained"))
    }

    /// `rebalance`: the moves that even out the running partitions, applied
    /// unless `dry_run`.
    pub(super) async fn rebalance(&mut self, dry_run: bool) -> Result<String, Failure> {
        let answer = self
            .client
            .rebalance(RebalanceRequest { dry_run })
            .await
            .map_err(|status| self.failure("cannot rebalance", status))?
            .into_inner();
        let json = RebalanceJson {
            applied: answer.applied,
            moves: answer.moves.iter().map(MoveJson::from).collect(),
        };
        Ok(render(self.format, &json, |_| {
            moves_text(&answer.moves, answer.applied)
        }))
    }
}
