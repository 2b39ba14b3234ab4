//! Leadership of a coordinator: campaign through etcd's election API with the
//! lease its keeper holds (see [`kmirror_common::lease_keeper`]), reconcile while
//! elected, and step down at the first sign of lost leadership.
//!
//! Failing safe: the lease is counted as lost locally (two thirds of its TTL after
//! the last answered keep-alive) before etcd expires it and another coordinator can
//! win, and every write of the leader is a transaction comparing the leadership
//! key's create revision, so a coordinator that was deposed without noticing still
//! writes nothing.

use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use kmirror_common::lease_keeper::{next_lease, LeaseState};
use kmirror_common::schema::MemberInfo;
use kmirror_common::Keys;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::CoordinatorError;
use crate::group_sync::GroupSyncer;
use crate::kafka::KafkaClients;
use crate::reconcile::Reconciler;
use crate::Config;

/// Pause before retrying a failed campaign.
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
    /// The keeper's channel: the lease to campaign with.
    lease_rx: watch::Receiver<LeaseState>,
    /// Whether this coordinator leads, for its health.
    leader_tx: watch::Sender<bool>,
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
        lease_rx: watch::Receiver<LeaseState>,
        leader_tx: watch::Sender<bool>,
    ) -> Result<Self, CoordinatorError> {
        let election_client = kmirror_common::etcd::connect_for_election(&config.etcd).await?;
        Ok(Self {
            client,
            election_client,
            keys,
            member,
            lease_ttl: config.lease_ttl,
            lease_rx,
            leader_tx,
            kafka,
            refresh_interval: config.refresh_interval,
            debounce: config.debounce,
        })
    }

    /// Takes part in the election under each lease the keeper holds until
    /// `stop` is cancelled (resigning if it leads) or the member stops.
    pub async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let lease = tokio::select! {
                _ = stop.cancelled() => break,
                lease_opt = next_lease(&mut self.lease_rx) => match lease_opt {
                    Some(lease) => lease,
                    None => break,
                },
            };
            let lost = lease.lost.clone();
            let campaign = self.election_client.campaign(
                self.keys.election(),
                self.member.id.as_str(),
                lease.id,
            );
            let campaign = tracing::Instrument::instrument(
                campaign,
                crate::telemetry::campaign_span(&self.member),
            );
            let leader_key = tokio::select! {
                _ = stop.cancelled() => break,
                _ = lost.cancelled() => {
                    warn!("lease lost while campaigning, registering again");
                    continue;
                }
                response = campaign => match response.map(|mut response| response.take_leader()) {
                    Ok(Some(leader_key)) => leader_key,
                    Ok(None) => {
                        warn!("campaign answered without a leader key, retrying");
                        self.pause(&stop).await;
                        continue;
                    }
                    Err(error) => {
                        warn!(%error, "campaign for leadership failed, retrying");
                        self.pause(&stop).await;
                        continue;
                    }
                },
            };
            info!(member = %self.member.id, "elected leader, reconciling");
            self.leader_tx.send_replace(true);
            crate::telemetry::leading(true);

            let reconciler = Reconciler::new(
                self.client.clone(),
                self.keys.clone(),
                self.kafka.clone(),
                leader_key.clone(),
                self.refresh_interval,
                self.debounce,
                self.lease_ttl,
            );
            let group_syncer = GroupSyncer::new(
                self.client.clone(),
                self.keys.clone(),
                self.kafka.clone(),
                leader_key.clone(),
            );
            let session = stop.child_token();
            let outcome = tokio::select! {
                outcome = reconciler.run(session.clone()) => outcome,
                // The sync ends by itself only when deposed.
                outcome = group_syncer.run(session.clone()) => outcome,
                _ = lost.cancelled() => Err(CoordinatorError::Deposed),
            };
            session.cancel();
            self.leader_tx.send_replace(false);
            crate::telemetry::leading(false);
            match outcome {
                Ok(()) => {
                    // Stopping: hand leadership over at once rather than at lease expiry.
                    self.resign(leader_key).await;
                    break;
                }
                Err(error) => {
                    warn!(%error, "stepped down as leader");
                    if !lost.is_cancelled() {
                        self.resign(leader_key).await;
                    }
                    self.pause(&stop).await;
                }
            }
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
