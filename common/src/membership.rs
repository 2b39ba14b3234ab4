//! Member registration: a key under `members/<role>/<id>` bound to the member's own
//! lease, kept alive in the background.
//!
//! The member counts its lease as lost at a local deadline (two thirds of the TTL
//! after the last keep-alive etcd answered), well before etcd expires it, so a
//! member that cannot reach etcd stops working before anyone else can take its
//! partitions over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::etcd::EtcdError;
use crate::schema::{encode, Keys, MemberInfo};

/// A live registration. Dropping it stops the keep-alive (etcd then expires the key).
pub struct Registration {
    pub lease_id: i64,
    lost: CancellationToken,
    stop_keepalive: CancellationToken,
    guard: LeaseGuard,
}

/// Answers, without waiting, whether the member may still act on its lease:
/// checked before every write a zombie must not make (a batch sent or produced, a
/// checkpoint). It reads the monotonic clock, so a process that was paused (SIGSTOP,
/// a long GC-like stall) sees its lease as lost the moment it runs again, before
/// any background task had a chance to notice.
#[derive(Clone, Debug)]
pub struct LeaseGuard {
    health: Arc<LeaseHealth>,
}

#[derive(Debug)]
struct LeaseHealth {
    origin: Instant,
    /// Milliseconds after `origin` of the last keep-alive etcd answered.
    last_success_ms: AtomicU64,
    local_deadline: Duration,
}

impl LeaseGuard {
    fn new(local_deadline: Duration) -> Self {
        Self {
            health: Arc::new(LeaseHealth {
                origin: Instant::now(),
                last_success_ms: AtomicU64::new(0),
                local_deadline,
            }),
        }
    }

    /// A guard that never expires, for members run without etcd in tests.
    pub fn always_live() -> Self {
        Self::new(Duration::from_secs(u64::MAX / 4_000))
    }

    fn renewed(&self) {
        let elapsed = self.health.origin.elapsed().as_millis() as u64;
        self.health
            .last_success_ms
            .store(elapsed, Ordering::Release);
    }

    pub fn is_live(&self) -> bool {
        Instant::now() < self.deadline()
    }

    /// The instant the lease stops counting, unless renewed before.
    pub fn deadline(&self) -> Instant {
        let last_success =
            Duration::from_millis(self.health.last_success_ms.load(Ordering::Acquire));
        self.health.origin + last_success + self.health.local_deadline
    }
}

impl Registration {
    /// A registration kept by no task: `lost` and the guard's renewals are up to
    /// the caller (unit tests of what is built on registrations).
    #[cfg(test)]
    pub(crate) fn detached(lease_id: i64, ttl: Duration) -> (Self, CancellationToken) {
        let lost = CancellationToken::new();
        let guard = LeaseGuard::new(local_deadline(ttl));
        guard.renewed();
        let registration = Self {
            lease_id,
            lost: lost.clone(),
            stop_keepalive: CancellationToken::new(),
            guard,
        };
        (registration, lost)
    }

    /// Cancelled once the lease must be counted as lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// The synchronous view of the same lease.
    pub fn guard(&self) -> LeaseGuard {
        self.guard.clone()
    }

    /// Revokes the lease so the member disappears at once (graceful stop).
    pub async fn revoke(self, client: &mut Client) {
        self.stop_keepalive.cancel();
        if let Err(error) = client.lease_revoke(self.lease_id).await {
            warn!(lease_id = self.lease_id, %error, "failed to revoke lease");
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop_keepalive.cancel();
    }
}

/// Grants a lease, writes the member key bound to it and keeps the lease alive.
pub async fn register(
    client: &mut Client,
    keys: &Keys,
    info: &MemberInfo,
    ttl: Duration,
) -> Result<Registration, EtcdError> {
    let ttl_secs = ttl.as_secs().max(2) as i64;
    let lease_id = client.lease_grant(ttl_secs, None).await?.id();
    let key = keys.member(info.role, &info.id);
    client
        .put(
            key.clone(),
            encode(info),
            Some(PutOptions::new().with_lease(lease_id)),
        )
        .await?;
    let lost = CancellationToken::new();
    let stop_keepalive = CancellationToken::new();
    let ttl = Duration::from_secs(ttl_secs as u64);
    let guard = LeaseGuard::new(local_deadline(ttl));
    guard.renewed();
    crate::metrics::metrics().registrations.inc();
    let keepalive = KeepAlive {
        client: client.clone(),
        lease_id,
        ttl,
        lost: lost.clone(),
        stop: stop_keepalive.clone(),
        guard: guard.clone(),
    };
    tokio::spawn(keepalive.run());
    info!(member = %info.id, role = %info.role, lease_id, ttl_secs, "registered in etcd");
    Ok(Registration {
        lease_id,
        lost,
        stop_keepalive,
        guard,
    })
}

/// When a member stops counting on its lease: two thirds of the TTL after the
/// last renewal etcd confirmed, leaving a third of the TTL for stopping before
/// etcd can hand the member's work to someone else.
pub fn local_deadline(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

struct KeepAlive {
    client: Client,
    lease_id: i64,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
    guard: LeaseGuard,
}

impl KeepAlive {
    async fn run(mut self) {
        let local_deadline = local_deadline(self.ttl);
        let interval = self.ttl / 4;
        let mut last_success = Instant::now();
        let mut keeper_opt = None;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if last_success.elapsed() >= local_deadline || !self.guard.is_live() {
                warn!(
                    lease_id = self.lease_id,
                    "lease counted as lost: no keep-alive answered in time"
                );
                crate::metrics::metrics().leases_lost.inc();
                self.lost.cancel();
                return;
            }
            if keeper_opt.is_none() {
                match tokio::time::timeout(interval, self.client.lease_keep_alive(self.lease_id))
                    .await
                {
                    Ok(Ok(pair)) => keeper_opt = Some(pair),
                    Ok(Err(error)) => {
                        crate::metrics::metrics().lease_renewal_failures.inc();
                        debug!(%error, "cannot open lease keep-alive stream")
                    }
                    Err(_) => {
                        crate::metrics::metrics().lease_renewal_failures.inc();
                        debug!("opening the lease keep-alive stream timed out")
                    }
                }
            }
            if let Some((keeper, stream)) = keeper_opt.as_mut() {
                let exchange = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                match tokio::time::timeout(interval, exchange).await {
                    Ok(Ok(Some(response))) if response.ttl() > 0 => {
                        last_success = Instant::now();
                        self.guard.renewed();
                        crate::metrics::metrics().lease_renewals.inc();
                    }
                    Ok(Ok(Some(_))) => {
                        warn!(lease_id = self.lease_id, "lease expired in etcd");
                        crate::metrics::metrics().leases_lost.inc();
                        self.lost.cancel();
                        return;
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        crate::metrics::metrics().lease_renewal_failures.inc();
                        keeper_opt = None
                    }
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_counts_as_lost_at_the_local_deadline_without_any_task_running() {
        let guard = LeaseGuard::new(Duration::from_secs(4));
        guard.renewed();
        assert!(guard.is_live());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(guard.is_live());
        guard.renewed();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(guard.is_live(), "a renewal restarts the deadline");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!guard.is_live());
        assert_eq!(
            local_deadline(Duration::from_secs(6)),
            Duration::from_secs(4)
        );
    }
}
