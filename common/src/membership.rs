//! Member registration: a key under `members/<role>/<id>` bound to the member's own
//! lease, kept alive in the background.
//!
//! The member counts its lease as lost at a local deadline (two thirds of the TTL
//! after the last keep-alive etcd answered), well before etcd expires it, so a
//! member that cannot reach etcd stops working before anyone else can take its
//! partitions over.

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
}

impl Registration {
    /// Cancelled once the lease must be counted as lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
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
    let keepalive = KeepAlive {
        client: client.clone(),
        lease_id,
        ttl: Duration::from_secs(ttl_secs as u64),
        lost: lost.clone(),
        stop: stop_keepalive.clone(),
    };
    tokio::spawn(keepalive.run());
    info!(member = %info.id, role = %info.role, lease_id, ttl_secs, "registered in etcd");
    Ok(Registration {
        lease_id,
        lost,
        stop_keepalive,
    })
}

struct KeepAlive {
    client: Client,
    lease_id: i64,
    ttl: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
}

impl KeepAlive {
    async fn run(mut self) {
        let local_deadline = self.ttl * 2 / 3;
        let interval = self.ttl / 4;
        let mut last_success = Instant::now();
        let mut keeper_opt = None;
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            if last_success.elapsed() >= local_deadline {
                warn!(
                    lease_id = self.lease_id,
                    "lease counted as lost: no keep-alive answered in time"
                );
                self.lost.cancel();
                return;
            }
            if keeper_opt.is_none() {
                match tokio::time::timeout(interval, self.client.lease_keep_alive(self.lease_id))
                    .await
                {
                    Ok(Ok(pair)) => keeper_opt = Some(pair),
                    Ok(Err(error)) => debug!(%error, "cannot open lease keep-alive stream"),
                    Err(_) => debug!("opening the lease keep-alive stream timed out"),
                }
            }
            if let Some((keeper, stream)) = keeper_opt.as_mut() {
                let exchange = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                match tokio::time::timeout(interval, exchange).await {
                    Ok(Ok(Some(response))) if response.ttl() > 0 => last_success = Instant::now(),
                    Ok(Ok(Some(_))) => {
                        warn!(lease_id = self.lease_id, "lease expired in etcd");
                        self.lost.cancel();
                        return;
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => keeper_opt = None,
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
