//! Health of the fleet members of this process, as `/readyz` and the standard gRPC
//! health protocol report it.
//!
//! A member is *ready* while its etcd lease is live (it registered and the lease
//! is renewed within the local deadline, see [`crate::membership`]) and it is not
//! stopping. Registration hands each new lease's guard to [`lease_acquired`], so a
//! member that registers again after losing its lease is ready again at once; the
//! guard reads the clock, so readiness ends at the lease's local deadline without
//! any task having to notice. A coordinator also reports whether it leads.
//!
//! State is kept per member key (`/kmirror/<fleet>/members/<role>/<id>`), so
//! several members in one process (in-process tests) do not mix.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::membership::LeaseGuard;

/// gRPC health service name that is SERVING only on the coordinator that leads.
pub const LEADER_HEALTH_SERVICE: &str = "kmirror.leader";

/// How often gRPC health statuses are brought up to date.
const REPORT_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct MemberHealth {
    lease_opt: Option<LeaseGuard>,
    leader: bool,
    stopping: bool,
}

static MEMBERS: LazyLock<Mutex<HashMap<String, MemberHealth>>> = LazyLock::new(Default::default);

fn with_member<T>(member_key: &str, action: impl FnOnce(&mut MemberHealth) -> T) -> T {
    let mut members = MEMBERS.lock().expect("health lock poisoned");
    action(members.entry(member_key.to_string()).or_default())
}

/// Called on every registration: the member's lease is now `guard`'s.
pub fn lease_acquired(member_key: &str, guard: &LeaseGuard) {
    with_member(member_key, |member| member.lease_opt = Some(guard.clone()));
}

/// A coordinator took (`true`) or lost the lead.
pub fn set_leader(member_key: &str, leader: bool) {
    with_member(member_key, |member| member.leader = leader);
}

/// The member is stopping: not ready any more, whatever its lease.
pub fn set_stopping(member_key: &str) {
    with_member(member_key, |member| member.stopping = true);
}

/// A member's health at this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStatus {
    /// Registered with a lease that is still live.
    pub lease_live: bool,
    pub leader: bool,
    pub stopping: bool,
}

impl HealthStatus {
    pub fn ready(&self) -> bool {
        self.lease_live && !self.stopping
    }

    /// The body of `/readyz`: one `key: value` line each.
    pub fn describe(&self) -> String {
        let state = if self.ready() {
            "ready"
        } else if self.stopping {
            "stopping"
        } else {
            "no live etcd lease"
        };
        format!(
            "status: {state}\nlease: {}\nleader: {}\n",
            if self.lease_live { "live" } else { "lost" },
            self.leader
        )
    }
}

pub fn status(member_key: &str) -> HealthStatus {
    with_member(member_key, |member| HealthStatus {
        lease_live: member.lease_opt.as_ref().is_some_and(LeaseGuard::is_live),
        leader: member.leader,
        stopping: member.stopping,
    })
}

/// Keeps gRPC health statuses in line with the member's health until `stop` is
/// cancelled, which marks the member as stopping and every status NOT_SERVING.
///
/// `services` (`""` is the server as a whole) are SERVING while the member is
/// ready; `leader_service_opt` is SERVING while it is ready and leads.
pub fn report_grpc(
    member_key: String,
    reporter: HealthReporter,
    services: &[&str],
    leader_service_opt: Option<&str>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let services: Vec<String> = services.iter().map(|name| name.to_string()).collect();
    let leader_service_opt = leader_service_opt.map(str::to_string);
    tokio::spawn(async move {
        let mut reported: Option<(bool, bool)> = None;
        loop {
            let health = status(&member_key);
            let now = (health.ready(), health.ready() && health.leader);
            if reported != Some(now) {
                for service in &services {
                    reporter
                        .set_service_status(service, serving_status(now.0))
                        .await;
                }
                if let Some(leader_service) = &leader_service_opt {
                    reporter
                        .set_service_status(leader_service, serving_status(now.1))
                        .await;
                }
                reported = Some(now);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(REPORT_INTERVAL) => {}
            }
        }
        set_stopping(&member_key);
        for service in services.iter().chain(leader_service_opt.iter()) {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    })
}

fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_ready_with_a_live_lease_until_it_stops() {
        let key = "/kmirror/health-test/members/fetcher/f-1";
        assert!(!status(key).ready(), "not registered yet");
        lease_acquired(key, &LeaseGuard::always_live());
        assert!(status(key).ready());
        assert!(status(key).describe().starts_with("status: ready\n"));
        set_leader(key, true);
        assert!(status(key).leader);
        set_stopping(key);
        let stopping = status(key);
        assert!(!stopping.ready());
        assert!(stopping.describe().contains("status: stopping"));
        assert!(
            !status("/kmirror/health-test/members/fetcher/other").lease_live,
            "members do not mix"
        );
    }

    #[tokio::test]
    async fn grpc_statuses_follow_readiness_and_end_not_serving() {
        let key = "/kmirror/health-test/members/coordinator/c-1".to_string();
        let (reporter, _service) = tonic_health::server::health_reporter();
        let stop = CancellationToken::new();
        lease_acquired(&key, &LeaseGuard::always_live());
        set_leader(&key, true);
        let handle = report_grpc(
            key.clone(),
            reporter.clone(),
            &["", "kmirror.v1.Admin"],
            Some(LEADER_HEALTH_SERVICE),
            stop.clone(),
        );
        stop.cancel();
        handle.await.unwrap();
        assert!(!status(&key).ready());
    }
}
