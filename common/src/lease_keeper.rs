//! The one place a member's etcd lease is held: [`LeaseKeeper`] registers the
//! member, registers it again after a lost lease, and revokes the lease when the
//! member leaves, publishing every step on a `watch` channel of [`LeaseState`].
//!
//! ```text
//!   Registering ──registered──▶ Live(lease) ──lost──▶ Lost ──registered──▶ Live(lease')
//!        │                          │                   │
//!        └──────── stopping ────────┴───────────────────┴──▶ Stopping(lease if any) ──leave──▶ revoked
//! ```
//!
//! Everything that depends on the lease reads that channel: the member's work
//! (what lease to write under, and when to stop), its health ([`crate::health`])
//! and `/readyz`. `Stopping` keeps the lease: a member drains and checkpoints under
//! it after it stopped reporting ready, and only leaving revokes it.

use std::future::Future;
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::etcd::EtcdError;
use crate::membership::{register, LeaseGuard, Registration};
use crate::schema::{Keys, MemberInfo};

/// First pause between registration attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the member's lease stands, as the keeper publishes it.
#[derive(Debug, Clone)]
pub enum LeaseState {
    /// Not registered yet.
    Registering,
    /// Registered under this lease.
    Live(Lease),
    /// The lease was counted as lost; registering again.
    Lost,
    /// The member is stopping: it reports not ready and registers no more. The
    /// lease, if it had one, holds until the member leaves.
    Stopping(Option<Lease>),
}

impl LeaseState {
    /// The lease the member may still write under (when its guard is live).
    pub fn lease(&self) -> Option<&Lease> {
        match self {
            LeaseState::Live(lease) | LeaseState::Stopping(Some(lease)) => Some(lease),
            LeaseState::Registering | LeaseState::Lost | LeaseState::Stopping(None) => None,
        }
    }

    /// Registered and not stopping.
    pub fn is_live(&self) -> bool {
        matches!(self, LeaseState::Live(_))
    }
}

/// One registration's lease, as those who work under it see it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    /// Checked before every write a member past its lease deadline must not make.
    pub guard: LeaseGuard,
    /// Cancelled when this lease is counted as lost.
    pub lost: CancellationToken,
}

impl Lease {
    fn of(registration: &Registration) -> Self {
        Self {
            id: registration.lease_id,
            guard: registration.guard(),
            lost: registration.lost(),
        }
    }
}

/// How the keeper registers and revokes: etcd in a member, a fake in unit tests.
pub trait Registrar: Send + 'static {
    /// Registers under a new lease, first revoking `replaced_lease_opt` (a lost
    /// lease) on a best-effort basis so the member's old keys go at once.
    fn register(
        &mut self,
        replaced_lease_opt: Option<i64>,
    ) -> impl Future<Output = Result<Registration, EtcdError>> + Send;

    /// Revokes the lease so the member disappears at once (graceful stop).
    fn revoke(&mut self, registration: Registration) -> impl Future<Output = ()> + Send;
}

/// Registers `info` under `members/<role>/<id>` with a lease of `ttl`.
pub struct EtcdRegistrar {
    pub client: Client,
    pub keys: Keys,
    pub info: MemberInfo,
    pub ttl: Duration,
}

impl Registrar for EtcdRegistrar {
    async fn register(
        &mut self,
        replaced_lease_opt: Option<i64>,
    ) -> Result<Registration, EtcdError> {
        if let Some(replaced_lease) = replaced_lease_opt {
            let _ = self.client.lease_revoke(replaced_lease).await;
        }
        register(&mut self.client, &self.keys, &self.info, self.ttl).await
    }

    async fn revoke(&mut self, registration: Registration) {
        registration.revoke(&mut self.client).await;
    }
}

/// Holds the member's lease from its first registration to its revocation.
pub struct LeaseKeeper<R: Registrar = EtcdRegistrar> {
    registrar: R,
    registration_opt: Option<Registration>,
    state_tx: watch::Sender<LeaseState>,
}

impl<R: Registrar> LeaseKeeper<R> {
    /// A keeper in `Registering`, and the channel it publishes on.
    pub fn new(registrar: R) -> (Self, watch::Receiver<LeaseState>) {
        let (state_tx, state_rx) = watch::channel(LeaseState::Registering);
        let keeper = Self {
            registrar,
            registration_opt: None,
            state_tx,
        };
        (keeper, state_rx)
    }

    /// Registers once, now: a worker does not start without it.
    pub async fn register_first(&mut self) -> Result<(), EtcdError> {
        let registration = self.registrar.register(None).await?;
        self.registration_opt = Some(registration);
        Ok(())
    }

    /// Keeps the member registered until `stopping` is cancelled, publishes
    /// `Stopping` with the lease still held, and revokes it once `leave` is.
    pub async fn run(mut self, stopping: CancellationToken, leave: CancellationToken) {
        let mut lost_lease_opt = None;
        let registration_opt = loop {
            let registration = match self.registration_opt.take() {
                Some(registration) => registration,
                None => match self.register(lost_lease_opt.take(), &stopping).await {
                    Some(registration) => registration,
                    None => break None,
                },
            };
            let lease = Lease::of(&registration);
            self.state_tx.send_replace(LeaseState::Live(lease.clone()));
            tokio::select! {
                _ = stopping.cancelled() => break Some(registration),
                _ = lease.lost.cancelled() => {
                    warn!(lease_id = lease.id, "lease lost: registering again");
                    self.state_tx.send_replace(LeaseState::Lost);
                    lost_lease_opt = Some(registration.lease_id);
                }
            }
        };
        self.state_tx.send_replace(LeaseState::Stopping(
            registration_opt.as_ref().map(Lease::of),
        ));
        leave.cancelled().await;
        if let Some(registration) = registration_opt {
            self.registrar.revoke(registration).await;
        }
    }

    /// Registers, retrying with a growing pause, until etcd answers or
    /// `stopping` is cancelled (then `None`).
    async fn register(
        &mut self,
        // Revoked with every attempt, until one succeeds.
        lost_lease_opt: Option<i64>,
        stopping: &CancellationToken,
    ) -> Option<Registration> {
        let mut pauses = crate::backoff::doubling(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return None,
                result = self.registrar.register(lost_lease_opt) => match result {
                    Ok(registration) => return Some(registration),
                    Err(error) if lost_lease_opt.is_some() => {
                        debug!(%error, "cannot register again yet")
                    }
                    Err(error) => warn!(%error, "cannot register in etcd, retrying"),
                },
            }
            tokio::select! {
                _ = stopping.cancelled() => return None,
                _ = tokio::time::sleep(pauses.next().unwrap_or(MAX_BACKOFF)) => {}
            }
        }
    }
}

/// Waits for the next live lease: `None` once the member is stopping. A lease
/// already lost is skipped even before the keeper published the loss.
pub async fn next_lease(state_rx: &mut watch::Receiver<LeaseState>) -> Option<Lease> {
    let state = state_rx
        .wait_for(|state| match state {
            LeaseState::Live(lease) => !lease.lost.is_cancelled(),
            LeaseState::Stopping(_) => true,
            LeaseState::Registering | LeaseState::Lost => false,
        })
        .await
        .ok()?;
    match &*state {
        LeaseState::Live(lease) => Some(lease.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    const TTL: Duration = Duration::from_secs(6);

    /// What the fake etcd saw, and the loss switch of every lease it granted.
    #[derive(Default)]
    struct Seen {
        attempts: Vec<(tokio::time::Instant, Option<i64>)>,
        losses: Vec<CancellationToken>,
        revoked: Vec<i64>,
    }

    /// Answers registrations from a script (`false`: etcd unreachable).
    struct FakeRegistrar {
        answers: VecDeque<bool>,
        seen: Arc<Mutex<Seen>>,
    }

    impl Registrar for FakeRegistrar {
        async fn register(
            &mut self,
            replaced_lease_opt: Option<i64>,
        ) -> Result<Registration, EtcdError> {
            let mut seen = self.seen.lock().unwrap();
            seen.attempts
                .push((tokio::time::Instant::now(), replaced_lease_opt));
            if !self.answers.pop_front().unwrap_or(true) {
                return Err(EtcdError::Request(etcd_client::Error::InvalidArgs(
                    "unreachable".to_string(),
                )));
            }
            let lease_id = seen.losses.len() as i64 + 1;
            let (registration, lost) = Registration::detached(lease_id, TTL);
            seen.losses.push(lost);
            Ok(registration)
        }

        async fn revoke(&mut self, registration: Registration) {
            self.seen
                .lock()
                .unwrap()
                .revoked
                .push(registration.lease_id);
        }
    }

    struct Running {
        state_rx: watch::Receiver<LeaseState>,
        seen: Arc<Mutex<Seen>>,
        stopping: CancellationToken,
        leave: CancellationToken,
        handle: tokio::task::JoinHandle<()>,
    }

    fn start(answers: &[bool]) -> Running {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let registrar = FakeRegistrar {
            answers: answers.iter().copied().collect(),
            seen: seen.clone(),
        };
        let (keeper, state_rx) = LeaseKeeper::new(registrar);
        let stopping = CancellationToken::new();
        let leave = CancellationToken::new();
        let handle = tokio::spawn(keeper.run(stopping.clone(), leave.clone()));
        Running {
            state_rx,
            seen,
            stopping,
            leave,
            handle,
        }
    }

    async fn wait_for(
        state_rx: &mut watch::Receiver<LeaseState>,
        wanted: impl FnMut(&LeaseState) -> bool,
    ) -> LeaseState {
        tokio::time::timeout(Duration::from_secs(60), state_rx.wait_for(wanted))
            .await
            .expect("the state is reached")
            .expect("the keeper publishes")
            .clone()
    }

    fn lease_id(state: &LeaseState) -> Option<i64> {
        state.lease().map(|lease| lease.id)
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_is_registering_until_etcd_answers_then_live() {
        let mut running = start(&[false, false, true]);
        assert!(matches!(
            *running.state_rx.borrow(),
            LeaseState::Registering
        ));
        let live = wait_for(&mut running.state_rx, LeaseState::is_live).await;
        assert_eq!(lease_id(&live), Some(1));
        let attempts: Vec<Duration> = {
            let seen = running.seen.lock().unwrap();
            let first = seen.attempts[0].0;
            seen.attempts
                .iter()
                .map(|(at, _)| at.duration_since(first))
                .collect()
        };
        assert_eq!(
            attempts,
            [
                Duration::ZERO,
                Duration::from_millis(200),
                Duration::from_millis(600)
            ],
            "the pause between attempts doubles"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_is_published_then_replaced_by_a_new_registration() {
        let mut running = start(&[true, false, true]);
        let live = wait_for(&mut running.state_rx, LeaseState::is_live).await;
        let first = live.lease().unwrap().clone();
        running.seen.lock().unwrap().losses[0].cancel();
        wait_for(&mut running.state_rx, |state| {
            matches!(state, LeaseState::Lost)
        })
        .await;
        assert!(first.lost.is_cancelled());
        let live = wait_for(&mut running.state_rx, LeaseState::is_live).await;
        assert_eq!(lease_id(&live), Some(2), "a new lease, not the lost one");
        let replaced: Vec<Option<i64>> = running
            .seen
            .lock()
            .unwrap()
            .attempts
            .iter()
            .map(|(_, replaced)| *replaced)
            .collect();
        assert_eq!(
            replaced,
            [None, Some(1), Some(1)],
            "every attempt after the loss revokes the lost lease first"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_keeps_the_lease_until_the_member_leaves_then_revokes_it() {
        let mut running = start(&[true]);
        wait_for(&mut running.state_rx, LeaseState::is_live).await;
        running.stopping.cancel();
        let stopping = wait_for(&mut running.state_rx, |state| {
            matches!(state, LeaseState::Stopping(_))
        })
        .await;
        let lease = stopping.lease().expect("the lease is kept while stopping");
        assert!(lease.guard.is_live());
        tokio::task::yield_now().await;
        assert!(running.seen.lock().unwrap().revoked.is_empty());
        assert!(next_lease(&mut running.state_rx).await.is_none());
        running.leave.cancel();
        running.handle.await.unwrap();
        assert_eq!(running.seen.lock().unwrap().revoked, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_before_etcd_answers_ends_without_a_lease() {
        let mut running = start(&[false, false, false, false, false]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.stopping.cancel();
        running.leave.cancel();
        running.handle.await.unwrap();
        let state = running.state_rx.borrow_and_update().clone();
        assert!(matches!(state, LeaseState::Stopping(None)), "{state:?}");
        assert!(running.seen.lock().unwrap().revoked.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_registered_before_running_is_live_at_once() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let registrar = FakeRegistrar {
            answers: VecDeque::new(),
            seen: seen.clone(),
        };
        let (mut keeper, mut state_rx) = LeaseKeeper::new(registrar);
        keeper.register_first().await.unwrap();
        let stopping = CancellationToken::new();
        tokio::spawn(keeper.run(stopping.clone(), CancellationToken::new()));
        let lease = next_lease(&mut state_rx).await.expect("live");
        assert_eq!(lease.id, 1);
        assert_eq!(seen.lock().unwrap().attempts.len(), 1);
    }
}
