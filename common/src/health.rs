//! Health of a fleet member, as `/readyz` and the standard gRPC health protocol
//! report it, derived from the member's [`LeaseState`] channel (and, for a
//! coordinator, its leadership channel): nothing else sets it.
//!
//! A member is *ready* while its lease is `Live` and the lease's guard is within
//! its local deadline (see [`crate::membership`]). The gRPC statuses are set when
//! a channel changes and when the live lease's deadline comes (a timer at that
//! instant, not a poll), so they turn NOT_SERVING at the deadline even before the
//! keep-alive task noticed the loss. A member that registers again is ready again
//! at once; a stopping member is not ready, whatever its lease.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::lease_keeper::LeaseState;

/// gRPC health service name that is SERVING only on the coordinator that leads.
pub const LEADER_HEALTH_SERVICE: &str = "kmirror.leader";

/// A member's health, read from its channels.
#[derive(Debug, Clone)]
pub struct Health {
    lease_rx: watch::Receiver<LeaseState>,
    leader_rx_opt: Option<watch::Receiver<bool>>,
}

impl Health {
    pub fn new(lease_rx: watch::Receiver<LeaseState>) -> Self {
        Self {
            lease_rx,
            leader_rx_opt: None,
        }
    }

    /// Also reports whether the member leads (a coordinator).
    pub fn with_leader(mut self, leader_rx: watch::Receiver<bool>) -> Self {
        self.leader_rx_opt = Some(leader_rx);
        self
    }

    /// The member's health at this instant.
    pub fn status(&self) -> HealthStatus {
        let state = self.lease_rx.borrow();
        HealthStatus {
            lease_live: state.lease().is_some_and(|lease| lease.guard.is_live()),
            leader: self
                .leader_rx_opt
                .as_ref()
                .is_some_and(|leader_rx| *leader_rx.borrow()),
            stopping: matches!(*state, LeaseState::Stopping(_)),
        }
    }

    /// Keeps gRPC health statuses in line with the member's health until `stop`
    /// is cancelled or the keeper is gone, then sets every status NOT_SERVING.
    ///
    /// `services` (`""` is the server as a whole) are SERVING while the member is
    /// ready; `leader_service_opt` is SERVING while it is ready and leads.
    pub async fn report_grpc(
        mut self,
        reporter: HealthReporter,
        services: Vec<String>,
        leader_service_opt: Option<String>,
        stop: CancellationToken,
    ) {
        let mut reported: Option<(bool, bool)> = None;
        loop {
            let health = self.status();
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
            let leader_changed = async {
                match self.leader_rx_opt.as_mut() {
                    Some(leader_rx) => leader_rx.changed().await,
                    None => std::future::pending().await,
                }
            };
            // A renewal moves the deadline: when the timer fires, the status is
            // computed again and a new timer set at the new deadline.
            let deadline_opt = if health.ready() {
                self.lease_rx
                    .borrow()
                    .lease()
                    .map(|lease| lease.guard.deadline())
            } else {
                None
            };
            let deadline_passed = async {
                match deadline_opt {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let open = tokio::select! {
                _ = stop.cancelled() => false,
                changed = self.lease_rx.changed() => changed.is_ok(),
                changed = leader_changed => changed.is_ok(),
                _ = deadline_passed => true,
            };
            if !open {
                break;
            }
        }
        for service in services.iter().chain(leader_service_opt.iter()) {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    }
}

/// A member's health at one instant.
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

fn serving_status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
    use tonic_health::pb::health_server::Health as _;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::lease_keeper::Lease;
    use crate::membership::Registration;

    const TTL: Duration = Duration::from_secs(6);

    fn live_lease() -> Lease {
        let (registration, lost) = Registration::detached(7, TTL);
        Lease {
            id: registration.lease_id,
            guard: registration.guard(),
            lost,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_follows_the_lease_state_and_ends_at_the_lease_deadline() {
        let (lease_tx, lease_rx) = watch::channel(LeaseState::Registering);
        let health = Health::new(lease_rx);
        assert!(!health.status().ready(), "not registered yet");
        assert!(health
            .status()
            .describe()
            .starts_with("status: no live etcd lease\n"));
        lease_tx.send_replace(LeaseState::Live(live_lease()));
        assert!(health.status().ready());
        assert!(health.status().describe().starts_with("status: ready\n"));
        tokio::time::advance(TTL * 2 / 3).await;
        assert!(
            !health.status().ready(),
            "a lease past its local deadline is not live, whatever the channel says"
        );
        lease_tx.send_replace(LeaseState::Lost);
        assert!(health.status().describe().contains("lease: lost"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_member_is_not_ready_while_its_lease_still_holds() {
        let (lease_tx, lease_rx) = watch::channel(LeaseState::Live(live_lease()));
        let (leader_tx, leader_rx) = watch::channel(true);
        let health = Health::new(lease_rx).with_leader(leader_rx);
        assert!(health.status().leader);
        lease_tx.send_replace(LeaseState::Stopping(Some(live_lease())));
        let stopping = health.status();
        assert!(!stopping.ready());
        assert!(stopping.lease_live);
        assert_eq!(
            stopping.describe(),
            "status: stopping\nlease: live\nleader: true\n"
        );
        leader_tx.send_replace(false);
        assert!(!health.status().leader);
    }

    async fn grpc_status(service: &tonic_health::server::HealthService, name: &str) -> WireStatus {
        let response = service
            .check(tonic::Request::new(HealthCheckRequest {
                service: name.to_string(),
            }))
            .await
            .expect("the service is known");
        response.into_inner().status()
    }

    /// Waits (on paused time, so instantly) until the reporter caught up.
    async fn eventually(
        service: &tonic_health::server::HealthService,
        name: &str,
        wanted: WireStatus,
    ) {
        for _ in 0..100 {
            if grpc_status(service, name).await == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{name:?} never became {wanted:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_statuses_follow_the_channels_and_the_lease_deadline_and_end_not_serving() {
        let (lease_tx, lease_rx) = watch::channel(LeaseState::Registering);
        let (leader_tx, leader_rx) = watch::channel(false);
        let reporter = HealthReporter::new();
        let service = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let stop = CancellationToken::new();
        let handle = tokio::spawn(Health::new(lease_rx).with_leader(leader_rx).report_grpc(
            reporter,
            vec![String::new(), "kmirror.v1.Admin".to_string()],
            Some(LEADER_HEALTH_SERVICE.to_string()),
            stop.clone(),
        ));
        eventually(&service, "", WireStatus::NotServing).await;
        lease_tx.send_replace(LeaseState::Live(live_lease()));
        eventually(&service, "kmirror.v1.Admin", WireStatus::Serving).await;
        assert_eq!(
            grpc_status(&service, LEADER_HEALTH_SERVICE).await,
            WireStatus::NotServing
        );
        leader_tx.send_replace(true);
        eventually(&service, LEADER_HEALTH_SERVICE, WireStatus::Serving).await;
        tokio::time::advance(TTL * 2 / 3).await;
        eventually(&service, "", WireStatus::NotServing).await;
        eventually(&service, LEADER_HEALTH_SERVICE, WireStatus::NotServing).await;
        lease_tx.send_replace(LeaseState::Lost);
        lease_tx.send_replace(LeaseState::Live(live_lease()));
        eventually(&service, "", WireStatus::Serving).await;
        stop.cancel();
        handle.await.unwrap();
        for name in ["", "kmirror.v1.Admin", LEADER_HEALTH_SERVICE] {
            assert_eq!(grpc_status(&service, name).await, WireStatus::NotServing);
        }
    }
}
