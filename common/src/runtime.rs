//! The life cycle every fleet member shares: its lease keeper, its health (the
//! gRPC statuses and `/readyz`, both read from the keeper's channel) and its
//! background tasks, all under one [`TaskTracker`], stopped in one order.
//!
//! Stopping, in order:
//! 1. [`MemberRuntime::begin_stopping`] (or the member's shutdown token): the
//!    keeper publishes `Stopping`, so health turns NOT_SERVING and `/readyz` 503,
//!    while the lease still holds for the member's drain and last checkpoints;
//! 2. the member drains its own work;
//! 3. [`MemberRuntime::leave`]: the lease is revoked;
//! 4. [`MemberRuntime::finish`]: the background tasks (health reporter, metrics
//!    endpoint, ...) are stopped, and every tracked task is awaited.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::server::HealthReporter;

use crate::health::Health;
use crate::lease_keeper::{LeaseKeeper, LeaseState, Registrar};

/// A member's keeper, health and background tasks.
pub struct MemberRuntime {
    tasks: TaskTracker,
    /// Ends the background tasks, after the lease is revoked.
    stop_background: CancellationToken,
    /// The keeper stops registering and publishes `Stopping`.
    stopping: CancellationToken,
    /// The keeper revokes the lease and ends.
    leave: CancellationToken,
    keeper_handle_opt: Option<JoinHandle<()>>,
    lease_rx: watch::Receiver<LeaseState>,
    health: Health,
}

impl MemberRuntime {
    /// A runtime whose keeper is not running yet (the metrics endpoint needs the
    /// health before the member registers, and registering needs its address).
    pub fn new(lease_rx: watch::Receiver<LeaseState>) -> Self {
        Self {
            tasks: TaskTracker::new(),
            stop_background: CancellationToken::new(),
            stopping: CancellationToken::new(),
            leave: CancellationToken::new(),
            keeper_handle_opt: None,
            health: Health::new(lease_rx.clone()),
            lease_rx,
        }
    }

    /// Reports leadership too (a coordinator).
    pub fn with_leader(mut self, leader_rx: watch::Receiver<bool>) -> Self {
        self.health = self.health.clone().with_leader(leader_rx);
        self
    }

    /// Runs the keeper until the member leaves.
    pub fn run_keeper<R: Registrar>(&mut self, keeper: LeaseKeeper<R>) {
        let run = keeper.run(self.stopping.clone(), self.leave.clone());
        self.keeper_handle_opt = Some(self.tasks.spawn(run));
        // A `Type=notify` unit waits for the first registration (deploy/systemd/).
        let lease_rx = self.lease_rx.clone();
        self.spawn_background(|stop| crate::systemd::report(lease_rx, stop));
    }

    /// A task that runs until the background is stopped, the last step of
    /// [`MemberRuntime::finish`]; `task` gets the token that ends it.
    pub fn spawn_background<F, Fut>(&self, task: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.tasks.spawn(task(self.stop_background.clone()))
    }

    /// A task of the member's own, tracked so that [`MemberRuntime::finish`]
    /// waits for it; the member ends it.
    pub fn spawn<Fut>(&self, task: Fut) -> JoinHandle<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Keeps the gRPC statuses of `services` (and of `leader_service_opt`, for
    /// a coordinator) in line with the member's health.
    pub fn report_grpc_health(
        &self,
        reporter: HealthReporter,
        services: &[&str],
        leader_service_opt: Option<&str>,
    ) {
        let health = self.health.clone();
        let services = services.iter().map(|name| name.to_string()).collect();
        let leader_service_opt = leader_service_opt.map(str::to_string);
        self.spawn_background(|stop| {
            health.report_grpc(reporter, services, leader_service_opt, stop)
        });
    }

    /// The keeper's channel: what lease the member works under.
    pub fn lease_rx(&self) -> watch::Receiver<LeaseState> {
        self.lease_rx.clone()
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The keeper publishes `Stopping` (health NOT_SERVING) and registers no
    /// more; the lease holds until [`MemberRuntime::finish`].
    pub fn begin_stopping(&self) {
        self.stopping.cancel();
    }

    /// Begins stopping when `shutdown` is cancelled.
    pub fn stop_on(&self, shutdown: CancellationToken) {
        let stopping = self.stopping.clone();
        self.spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => stopping.cancel(),
                _ = stopping.cancelled() => {}
            }
        });
    }

    /// Revokes the lease (the member disappears from etcd at once). Background
    /// tasks go on until [`MemberRuntime::finish`].
    pub async fn leave(&mut self) {
        self.stopping.cancel();
        self.leave.cancel();
        if let Some(keeper_handle) = self.keeper_handle_opt.take() {
            let _ = keeper_handle.await;
        }
    }

    /// Revokes the lease if still held, then stops the background tasks and
    /// waits for every tracked task.
    pub async fn finish(mut self) {
        self.leave().await;
        self.stop_background.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for MemberRuntime {
    /// A member dropped without [`MemberRuntime::finish`] (it failed to build)
    /// leaves nothing running: the keeper ends and the lease expires.
    fn drop(&mut self) {
        self.stopping.cancel();
        self.leave.cancel();
        self.stop_background.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finishing_stops_the_background_after_the_member_stopped() {
        let (lease_tx, lease_rx) = watch::channel(LeaseState::Registering);
        let runtime = MemberRuntime::new(lease_rx);
        let background_ended = Arc::new(AtomicBool::new(false));
        let ended = background_ended.clone();
        runtime.spawn_background(|stop| async move {
            stop.cancelled().await;
            ended.store(true, Ordering::SeqCst);
        });
        runtime.begin_stopping();
        tokio::task::yield_now().await;
        assert!(
            !background_ended.load(Ordering::SeqCst),
            "stopping leaves the background running"
        );
        runtime.finish().await;
        assert!(background_ended.load(Ordering::SeqCst));
        drop(lease_tx);
    }
}
