//! Membership and leadership of a coordinator: register under `members/coordinator/`,
//! campaign through etcd's election API with the same lease, reconcile while
//! elected, and step down at the first sign of lost leadership.
//!
//! Failing safe: the lease is counted as lost locally (two thirds of its TTL after
//! the last answered keep-alive) before etcd expires it and another coordinator can
//! win, and every write of the leader is a transaction comparing the leadership
//! key's create revision, so a coordinator that was deposed without noticing still
//! writes nothing.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, LeaderKey, ResignOptions};
use kmirror_common::etcd::EtcdError;
use kmirror_common::membership::{register, Registration};
use kmirror_common::schema::MemberInfo;
use kmirror_common::Keys;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::CoordinatorError;
use crate::kafka::KafkaClients;
use crate::reconcile::Reconciler;
use crate::Config;

/// Pause before retrying a failed registration or campaign.
const RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Bound on the best-effort requests of stepping down.
const STEP_DOWN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Leadership {
    /// For registration, reads and fenced writes (bounded request timeout).
    client: Client,
    /// For campaigning only: a campaign blocks until elected, which the request
    /// timeout of `client` would cut short.
    election_client: Client,
    keys: Keys,
    member: MemberInfo,
    lease_ttl: Duration,
    kafka: KafkaClients,
    refresh_interval: Duration,
    debounce: Duration,
}

impl Leadership {
    pub async fn new(
        client: Client,
        config: &Config,
        keys: Keys,
        member: MemberInfo,
        kafka: KafkaClients,
    ) -> Result<Self, CoordinatorError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let endpoints = &config.etcd.endpoints;
        let election_client =
            Client::connect(endpoints, Some(options))
                .await
                .map_err(|source| EtcdError::Connect {
                    endpoints: endpoints.join(","),
                    source,
                })?;
        Ok(Self {
            client,
            election_client,
            keys,
            member,
            lease_ttl: config.lease_ttl,
            kafka,
            refresh_interval: config.refresh_interval,
            debounce: config.debounce,
        })
    }

    /// Registers and takes part in the election until `stop` is cancelled, then
    /// resigns and revokes the lease.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut registration_opt: Option<Registration> = None;
        while !stop.is_cancelled() {
            let registration = match registration_opt.take() {
                Some(registration) if !registration.lost().is_cancelled() => registration,
                _ => match self.register(&stop).await {
                    Some(registration) => registration,
                    None => break,
                },
            };
            let lost = registration.lost();
            let campaign = self.election_client.campaign(
                self.keys.election(),
                self.member.id.as_str(),
                registration.lease_id,
            );
            let campaign = tracing::Instrument::instrument(
                campaign,
                crate::telemetry::campaign_span(&self.member),
            );
            let leader_key = tokio::select! {
                _ = stop.cancelled() => {
                    registration_opt = Some(registration);
                    break;
                }
                _ = lost.cancelled() => {
                    warn!("lease lost while campaigning, registering again");
                    continue;
                }
                response = campaign => match response.map(|mut response| response.take_leader()) {
                    Ok(Some(leader_key)) => leader_key,
                    Ok(None) => {
                        warn!("campaign answered without a leader key, retrying");
                        registration_opt = Some(registration);
                        self.pause(&stop).await;
                        continue;
                    }
                    Err(error) => {
                        warn!(%error, "campaign for leadership failed, retrying");
                        registration_opt = Some(registration);
                        self.pause(&stop).await;
                        continue;
                    }
                },
            };
            info!(member = %self.member.id, "elected leader, reconciling");
            crate::telemetry::leading(&self.keys, &self.member, true);

            let reconciler = Reconciler::new(
                self.client.clone(),
                self.keys.clone(),
                self.kafka.clone(),
                leader_key.clone(),
                self.refresh_interval,
                self.debounce,
                self.lease_ttl,
            );
            let session = stop.child_token();
            let outcome = tokio::select! {
                outcome = reconciler.run(session.clone()) => outcome,
                _ = lost.cancelled() => Err(CoordinatorError::Deposed),
            };
            session.cancel();
            crate::telemetry::leading(&self.keys, &self.member, false);
            match outcome {
                Ok(()) => {
                    // Stopping: hand leadership over at once rather than at lease expiry.
                    self.resign(leader_key).await;
                    registration_opt = Some(registration);
                    break;
                }
                Err(error) => {
                    warn!(%error, "stepped down as leader");
                    if !lost.is_cancelled() {
                        self.resign(leader_key).await;
                        registration_opt = Some(registration);
                    }
                    self.pause(&stop).await;
                }
            }
        }
        if let Some(registration) = registration_opt {
            // Revoking deletes the member key and any campaign key bound to the lease.
            let _ = tokio::time::timeout(STEP_DOWN_TIMEOUT, registration.revoke(&mut self.client))
                .await;
            info!(member = %self.member.id, "left the fleet");
        }
    }

    async fn register(&mut self, stop: &CancellationToken) -> Option<Registration> {
        loop {
            let attempt = register(&mut self.client, &self.keys, &self.member, self.lease_ttl);
            tokio::select! {
                _ = stop.cancelled() => return None,
                result = attempt => match result {
                    Ok(registration) => return Some(registration),
                    Err(error) => warn!(%error, "cannot register in etcd, retrying"),
                },
            }
            self.pause(stop).await;
        }
    }

    async fn resign(&mut self, leader_key: LeaderKey) {
        let resign = self
            .election_client
            .resign(Some(ResignOptions::new().with_leader(leader_key)));
        match tokio::time::timeout(STEP_DOWN_TIMEOUT, resign).await {
            Ok(Ok(_)) => info!(member = %self.member.id, "resigned leadership"),
            Ok(Err(error)) => warn!(%error, "failed to resign leadership"),
            Err(_) => warn!("resigning leadership timed out"),
        }
    }

    async fn pause(&self, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(RETRY_BACKOFF) => {}
        }
    }
}
