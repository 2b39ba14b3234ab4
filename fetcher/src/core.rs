//! The fetcher's core: one actor that owns every assigned partition.
//!
//! Each partition is a state machine ([`crate::partition::Partition`]) that
//! decides what its inputs mean and returns [`Effect`]s; the core only routes
//! inputs (assignments, fetched batches, stream events, acks, ticks, checkpoint
//! outcomes) to the partitions they concern and carries out the effects: commands
//! to the flows' consumers, batches to the writers' streams, checkpoint commands
//! to the checkpointer. It also owns what partitions share: the consumers (one
//! per flow), the writer streams, the in-flight budget, the coalesced checkpoint
//! writes and the telemetry. Nothing else mutates partition state, so there are
//! no locks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kmirror_common::cluster_access::cluster_access;
use kmirror_common::membership::LeaseGuard;
use kmirror_common::schema::{ClusterSpec, PartitionError};
use kmirror_common::{ClusterName, FlowName, MemberId, PartitionKey};
use kmirror_proto::frame::Compression;
use kmirror_proto::v1::{Batch, BatchAck, WorkerPartition};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::budget::InFlightBudget;
use crate::checkpointer::{CheckpointCommand, CheckpointEntry, CheckpointOutcome};
use crate::consumer::{self, ConsumerCommand, ConsumerHandle, Fetched, Refusal};
use crate::link::{Link, LinkEvent};
use crate::partition::{Effect, Limits, Partition, Route};
use crate::watcher::Desired;
use kmirror_common::tls::Transport;

#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub max_in_flight_batches: usize,
    /// Bytes of record data read and not yet acknowledged, over all partitions.
    pub max_in_flight_bytes: usize,
    pub checkpoint_interval: Duration,
    pub retry_backoff: Duration,
    pub shutdown_grace: Duration,
    /// How batches are compressed on the way to writers.
    pub compression: Compression,
    /// How links to writers connect (mutual TLS or `--insecure`).
    pub transport: Transport,
}

struct LinkState {
    address: String,
    batch_tx: Option<mpsc::Sender<Batch>>,
    cancel: CancellationToken,
}

pub struct Core {
    pub me: MemberId,
    pub settings: CoreSettings,
    pub desired_rx: mpsc::Receiver<Desired>,
    pub fetched_rx: mpsc::Receiver<Fetched>,
    pub fetched_tx: mpsc::Sender<Fetched>,
    pub link_events_rx: mpsc::UnboundedReceiver<LinkEvent>,
    pub link_events_tx: mpsc::UnboundedSender<LinkEvent>,
    pub checkpoint_tx: mpsc::UnboundedSender<CheckpointCommand>,
    pub status_tx: watch::Sender<Vec<WorkerPartition>>,
    lease: LeaseGuard,
    partitions: HashMap<PartitionKey, Partition>,
    consumers: HashMap<FlowName, ConsumerHandle>,
    links: HashMap<MemberId, LinkState>,
    writer_addresses: HashMap<MemberId, String>,
    sources: HashMap<FlowName, ClusterSpec>,
    pending_checkpoint: Option<oneshot::Receiver<CheckpointOutcome>>,
    telemetry: crate::telemetry::FetcherTelemetry,
    budget: InFlightBudget,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: MemberId,
        settings: CoreSettings,
        desired_rx: mpsc::Receiver<Desired>,
        fetched_rx: mpsc::Receiver<Fetched>,
        fetched_tx: mpsc::Sender<Fetched>,
        link_events_rx: mpsc::UnboundedReceiver<LinkEvent>,
        link_events_tx: mpsc::UnboundedSender<LinkEvent>,
        checkpoint_tx: mpsc::UnboundedSender<CheckpointCommand>,
        status_tx: watch::Sender<Vec<WorkerPartition>>,
        lease: LeaseGuard,
    ) -> Self {
        Self {
            me,
            desired_rx,
            fetched_rx,
            fetched_tx,
            link_events_rx,
            link_events_tx,
            checkpoint_tx,
            status_tx,
            lease,
            partitions: HashMap::new(),
            consumers: HashMap::new(),
            links: HashMap::new(),
            writer_addresses: HashMap::new(),
            sources: HashMap::new(),
            pending_checkpoint: None,
            telemetry: Default::default(),
            budget: InFlightBudget::new(settings.max_in_flight_bytes),
            settings,
        }
    }

    /// Works until `shutdown` is cancelled, then drains and checkpoints, or until
    /// `lease_lost` is cancelled, then stops at once (another fetcher may already
    /// own the partitions, so nothing more is written).
    pub async fn run(mut self, shutdown: CancellationToken, lease_lost: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = lease_lost.cancelled() => {
                    warn!("lease lost: stopping every partition without further writes");
                    self.stop_everything();
                    return;
                }
                _ = shutdown.cancelled() => break,
                Some(event) = self.link_events_rx.recv() => self.on_link_event(event),
                outcome = wait_checkpoint(&mut self.pending_checkpoint) => self.on_checkpoint_outcome(outcome),
                Some(desired) = self.desired_rx.recv() => self.on_desired(desired),
                Some(fetched) = self.fetched_rx.recv() => self.on_fetched(fetched).await,
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.drain(lease_lost).await;
    }

    fn limits(&self) -> Limits {
        Limits {
            max_in_flight_batches: self.settings.max_in_flight_batches,
            retry_backoff: self.settings.retry_backoff,
        }
    }

    fn on_desired(&mut self, desired: Desired) {
        let now = Instant::now();
        self.writer_addresses = desired.writers;
        self.sources = desired.sources;
        // A flow whose source cluster settings changed gets a fresh consumer.
        let changed_flows: Vec<FlowName> = self
            .consumers
            .iter()
            .filter(|(flow, handle)| self.sources.get(*flow) != Some(&handle.cluster))
            .map(|(flow, _)| flow.clone())
            .collect();
        for flow in &changed_flows {
            self.consumers.remove(flow);
            if let Some(cluster) = self.sources.get(flow) {
                cluster_access().retry_now(&cluster.name, now.into_std());
            }
        }

        let removed: Vec<PartitionKey> = self
            .partitions
            .keys()
            .filter(|partition| !desired.assignments.contains_key(*partition))
            .cloned()
            .collect();
        for key in removed {
            self.update(&key, Partition::on_unassigned);
        }

        let limits = self.limits();
        for (key, held) in desired.assignments {
            match self.partitions.get_mut(&key) {
                None => {
                    let (partition, effects) = Partition::assigned(
                        key.clone(),
                        held,
                        desired.checkpoints.get(&key),
                        limits,
                        now,
                    );
                    self.partitions.insert(key.clone(), partition);
                    self.carry_out(&key, effects);
                }
                Some(partition) if partition.held_raw() != held.raw => {
                    let effects = partition.on_assignment_changed(held, now);
                    self.carry_out(&key, effects);
                }
                Some(partition) if changed_flows.contains(&key.flow) => {
                    partition.on_source_changed();
                }
                Some(_) => {}
            }
        }
        for flow in &changed_flows {
            let affected: Vec<PartitionKey> = self
                .partitions
                .keys()
                .filter(|partition| &partition.flow == flow)
                .cloned()
                .collect();
            for key in affected {
                self.update(&key, Partition::stop);
            }
        }
        self.reconcile_links();
        self.consumers.retain(|flow, _| {
            self.partitions
                .keys()
                .any(|partition| &partition.flow == flow)
        });
        self.forget_unused_sources();
        let waiting: Vec<PartitionKey> = self
            .partitions
            .iter()
            .filter(|(_, partition)| partition.is_waiting_for_link())
            .map(|(key, _)| key.clone())
            .collect();
        for key in waiting {
            self.start(&key);
        }
    }

    /// Forgets the pauses of source clusters no partition here reads any more.
    fn forget_unused_sources(&self) {
        let in_use: HashSet<&ClusterName> = self
            .partitions
            .keys()
            .filter_map(|partition| self.sources.get(&partition.flow))
            .map(|cluster| &cluster.name)
            .collect();
        for cluster in self.sources.values() {
            if !in_use.contains(&cluster.name) {
                cluster_access().forget(&cluster.name);
            }
        }
    }

    /// Opens a stream to every writer in use and closes the others; a writer that
    /// moved to a new address gets a new stream.
    fn reconcile_links(&mut self) {
        let in_use: HashSet<MemberId> = self
            .partitions
            .values()
            .map(|partition| partition.writer().clone())
            .collect();
        let stale: Vec<MemberId> = self
            .links
            .iter()
            .filter(|(writer, link)| {
                !in_use.contains(*writer)
                    || self.writer_addresses.get(*writer) != Some(&link.address)
            })
            .map(|(writer, _)| writer.clone())
            .collect();
        for writer in stale {
            if let Some(link) = self.links.remove(&writer) {
                link.cancel.cancel();
            }
            for key in self.partitions_on(&writer) {
                self.update(&key, Partition::on_link_closed);
            }
        }
        for writer in in_use {
            if self.links.contains_key(&writer) {
                continue;
            }
            let Some(address) = self.writer_addresses.get(&writer).cloned() else {
                warn!(%writer, "assigned writer is not registered; waiting for it");
                continue;
            };
            let cancel = CancellationToken::new();
            let link = Link {
                writer: writer.clone(),
                address: address.clone(),
                events_tx: self.link_events_tx.clone(),
                cancel: cancel.clone(),
                compression: self.settings.compression,
                transport: self.settings.transport.clone(),
            };
            tokio::spawn(link.run());
            self.links.insert(
                writer,
                LinkState {
                    address,
                    batch_tx: None,
                    cancel,
                },
            );
        }
    }

    fn partitions_on(&self, writer: &MemberId) -> Vec<PartitionKey> {
        self.partitions
            .iter()
            .filter(|(_, partition)| partition.writer() == writer)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Starts (or restarts) a partition from its committed position, if its
    /// writer's stream is open and its flow's consumer exists (created here).
    fn start(&mut self, key: &PartitionKey) {
        let Some(partition) = self.partitions.get_mut(key) else {
            return;
        };
        if partition.is_fenced() {
            return;
        }
        let link_up = self
            .links
            .get(partition.writer())
            .is_some_and(|link| link.batch_tx.is_some());
        if !link_up {
            partition.link_unavailable();
            return;
        }
        if !self.consumers.contains_key(&key.flow) {
            let Some(cluster) = self.sources.get(&key.flow).cloned() else {
                let effects = partition.source_unavailable(None, Instant::now());
                self.carry_out(key, effects);
                return;
            };
            let now = Instant::now();
            if let Some(pause) = cluster_access().paused(&cluster.name, now.into_std()) {
                let effects = partition.source_refused(None, pause.remaining(now.into_std()), now);
                self.carry_out(key, effects);
                return;
            }
            match consumer::spawn(
                key.flow.clone(),
                cluster,
                self.fetched_tx.clone(),
                self.budget.clone(),
            ) {
                Ok(handle) => {
                    self.consumers.insert(key.flow.clone(), handle);
                }
                Err(error) => {
                    let message = format!(
                        "cannot create a consumer for the source of flow {}: {error}",
                        key.flow
                    );
                    let effects = partition.source_unavailable(Some(message), Instant::now());
                    self.carry_out(key, effects);
                    return;
                }
            }
        }
        self.telemetry.partition_started(key);
        self.update(key, Partition::start);
    }

    /// Applies `input` to a partition and carries out what it returns.
    fn update(&mut self, key: &PartitionKey, input: impl FnOnce(&mut Partition) -> Vec<Effect>) {
        let Some(partition) = self.partitions.get_mut(key) else {
            return;
        };
        let effects = input(partition);
        let batches = self.carry_out(key, effects);
        debug_assert!(batches.is_empty(), "batches are sent by on_fetched only");
    }

    /// Carries out a partition's effects, except sends: those are returned for
    /// the caller to hand to the writer's stream. A partition given back is
    /// forgotten.
    fn carry_out(&mut self, key: &PartitionKey, effects: Vec<Effect>) -> Vec<Batch> {
        let mut batches = Vec::new();
        for effect in effects {
            match effect {
                Effect::Assign { offset, generation } => {
                    self.command_consumer(
                        key,
                        ConsumerCommand::Assign {
                            topic: key.topic.clone(),
                            partition: key.partition,
                            offset,
                            generation,
                        },
                    );
                }
                Effect::Unassign => self.command_consumer(
                    key,
                    ConsumerCommand::Unassign {
                        topic: key.topic.clone(),
                        partition: key.partition,
                    },
                ),
                Effect::Pause => self.command_consumer(
                    key,
                    ConsumerCommand::Pause {
                        topic: key.topic.clone(),
                        partition: key.partition,
                    },
                ),
                Effect::Resume => self.command_consumer(
                    key,
                    ConsumerCommand::Resume {
                        topic: key.topic.clone(),
                        partition: key.partition,
                    },
                ),
                Effect::Start => self.start(key),
                Effect::Send { mut batch, summary } => {
                    batch.trace_context = self.telemetry.batch_sent(
                        key,
                        batch.seq,
                        batch.epoch,
                        &summary,
                        batch.next_offset,
                    );
                    batches.push(batch);
                }
                Effect::ReportError { message, offset } => {
                    let _ = self.checkpoint_tx.send(CheckpointCommand::ReportError {
                        partition: key.clone(),
                        error: PartitionError {
                            message,
                            offset,
                            reporter: self.me.clone(),
                            since_ms: kmirror_common::now_ms(),
                        },
                    });
                }
                Effect::ClearError => {
                    let _ = self.checkpoint_tx.send(CheckpointCommand::ClearError {
                        partition: key.clone(),
                    });
                }
                Effect::Hold {
                    assignment_raw,
                    hold,
                } => {
                    let _ = self.checkpoint_tx.send(CheckpointCommand::Hold {
                        partition: key.clone(),
                        assignment_raw,
                        hold,
                    });
                }
                Effect::Release {
                    assignment_raw,
                    checkpoint_opt,
                } => {
                    let _ = self.checkpoint_tx.send(CheckpointCommand::Release {
                        partition: key.clone(),
                        assignment_raw,
                        checkpoint_opt,
                    });
                }
            }
        }
        if self
            .partitions
            .get(key)
            .is_some_and(|partition| partition.is_released())
        {
            self.partitions.remove(key);
            self.telemetry.forget(key);
        }
        batches
    }

    fn command_consumer(&self, key: &PartitionKey, command: ConsumerCommand) {
        if let Some(consumer) = self.consumers.get(&key.flow) {
            consumer.send(command);
        }
    }

    async fn on_fetched(&mut self, fetched: Fetched) {
        match fetched {
            Fetched::Refused(refusal) => self.on_refused(refusal),
            Fetched::Skip {
                partition,
                generation,
                next_offset,
            } => {
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.on_skipped(generation, next_offset);
                }
            }
            Fetched::OutOfRange {
                partition,
                generation,
                position,
                watermarks_opt,
            } => {
                let now = Instant::now();
                self.update(&partition, |state| {
                    state.on_out_of_range(generation, position, watermarks_opt, now)
                });
            }
            Fetched::Batch {
                partition: key,
                generation,
                packed,
                read_from,
                next_offset,
                reservation,
            } => {
                let Some(partition) = self.partitions.get_mut(&key) else {
                    return;
                };
                let batch_tx_opt = self
                    .links
                    .get(partition.writer())
                    .and_then(|link| link.batch_tx.clone());
                let route = if !self.lease.is_live() {
                    Route::LeaseExpired
                } else if batch_tx_opt.is_none() {
                    Route::WriterUnreachable
                } else {
                    Route::Open
                };
                let effects = partition.on_fetched(
                    generation,
                    packed,
                    read_from,
                    next_offset,
                    reservation,
                    route,
                    Instant::now(),
                );
                let batches = self.carry_out(&key, effects);
                let Some(batch_tx) = batch_tx_opt else {
                    return;
                };
                for batch in batches {
                    if batch_tx.send(batch).await.is_err() {
                        // The stream is gone; its Down event restarts the writer's
                        // partitions.
                        self.update(&key, Partition::on_send_failed);
                        return;
                    }
                }
            }
        }
    }

    /// The source cluster refused a flow's consumer: the consumer goes and the
    /// flow's partitions wait for the cluster's pause. A partition refused alone
    /// (an ACL) waits the retry backoff: the cluster still answers its others.
    fn on_refused(&mut self, refusal: Refusal) {
        let Some(consumer) = self
            .consumers
            .get(&refusal.flow)
            .filter(|consumer| consumer.id == refusal.consumer_id)
        else {
            return;
        };
        let cluster = consumer.cluster.name.clone();
        let now = Instant::now();
        let message = format!(
            "source cluster {cluster} refused the fetcher ({}): {}",
            refusal.cause, refusal.message
        );
        let (refused, retry_in) = match refusal.partition_opt {
            Some(key) => {
                cluster_access().refused_request(&cluster, refusal.cause);
                (vec![key], self.settings.retry_backoff)
            }
            None => {
                self.consumers.remove(&refusal.flow);
                let keys = self
                    .partitions
                    .keys()
                    .filter(|key| key.flow == refusal.flow)
                    .cloned()
                    .collect();
                let pause = cluster_access().refused(&cluster, refusal.cause, now.into_std());
                (keys, pause)
            }
        };
        for key in refused {
            let message = Some(message.clone());
            self.update(&key, |partition| {
                partition.source_refused(message, retry_in, now)
            });
        }
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up {
                writer,
                address,
                batch_tx,
            } => {
                let Some(link) = self.links.get_mut(&writer) else {
                    return;
                };
                if link.address != address {
                    return;
                }
                link.batch_tx = Some(batch_tx);
                for key in self.partitions_on(&writer) {
                    self.update(&key, |partition| partition.on_link_up());
                }
            }
            LinkEvent::Down { writer, address } => {
                let Some(link) = self.links.get_mut(&writer) else {
                    return;
                };
                if link.address != address || link.batch_tx.is_none() {
                    return;
                }
                link.batch_tx = None;
                for key in self.partitions_on(&writer) {
                    self.update(&key, Partition::on_link_down);
                }
            }
            LinkEvent::Ack { writer: _, ack } => self.on_ack(ack),
        }
    }

    fn on_ack(&mut self, ack: BatchAck) {
        let Some(key) = PartitionKey::from_wire(ack.source.as_ref()) else {
            return;
        };
        // Ends when the ack is handled: the span covers settling the batch.
        let _settle_span = self.telemetry.batch_acked(&key, &ack);
        let now = Instant::now();
        self.update(&key, |partition| partition.on_ack(ack, now));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        for key in keys {
            self.update(&key, |partition| partition.on_tick(now));
        }
        if self.pending_checkpoint.is_none() {
            if let Some(done_rx) = self.request_checkpoints() {
                self.pending_checkpoint = Some(done_rx);
            }
        }
        self.publish_status();
        let consumers = &self.consumers;
        self.telemetry.publish(
            self.partitions
                .iter()
                .map(|(key, partition)| (key, partition.committed().next_offset)),
            |partition| {
                consumers
                    .get(&partition.flow)?
                    .ends
                    .get(&partition.topic, partition.partition)
            },
        );
    }

    /// Sends the checkpoints that moved since they were last written, in one
    /// coalesced write.
    fn request_checkpoints(&mut self) -> Option<oneshot::Receiver<CheckpointOutcome>> {
        if !self.lease.is_live() {
            return None;
        }
        let now_ms = kmirror_common::now_ms();
        let now = Instant::now();
        let entries: Vec<CheckpointEntry> = self
            .partitions
            .values()
            .filter_map(|partition| partition.checkpoint_due(now, now_ms))
            .collect();
        if entries.is_empty() {
            return None;
        }
        let (done_tx, done_rx) = oneshot::channel();
        self.checkpoint_tx
            .send(CheckpointCommand::Write { entries, done_tx })
            .ok()?;
        Some(done_rx)
    }

    fn on_checkpoint_outcome(&mut self, outcome: CheckpointOutcome) {
        self.pending_checkpoint = None;
        let now = Instant::now();
        for (key, checkpoint) in outcome.written {
            if let Some(partition) = self.partitions.get_mut(&key) {
                partition.on_checkpoint_written(&checkpoint, now);
            }
        }
        for (key, refused_raw) in outcome.fenced {
            self.update(&key, |partition| {
                partition.on_checkpoint_refused(&refused_raw)
            });
        }
    }

    fn publish_status(&self) {
        let partitions = self.partitions.values().map(Partition::status).collect();
        let _ = self.status_tx.send(partitions);
    }

    fn stop_everything(&mut self) {
        let keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        for key in keys {
            self.update(&key, Partition::stop);
        }
        self.consumers.clear();
        for (_, link) in self.links.drain() {
            link.cancel.cancel();
        }
    }

    /// Graceful stop: fetch nothing more, wait for the acks of what is in flight,
    /// write the final checkpoints, close the streams.
    async fn drain(mut self, lease_lost: CancellationToken) {
        let deadline = Instant::now() + self.settings.shutdown_grace.mul_f32(0.75);
        for partition in self.partitions.values_mut() {
            partition.on_shutdown();
        }
        self.consumers.clear();
        let in_flight = |partitions: &HashMap<PartitionKey, Partition>| {
            partitions
                .values()
                .filter(|partition| partition.in_flight() > 0)
                .count()
        };
        info!(
            partitions_in_flight = in_flight(&self.partitions),
            "draining in-flight batches"
        );
        while in_flight(&self.partitions) > 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(partitions = in_flight(&self.partitions), "grace period over with batches unacknowledged; they will be resent");
                    break;
                }
                _ = lease_lost.cancelled() => return,
                Some(event) = self.link_events_rx.recv() => {
                    if let LinkEvent::Ack { ack, .. } = event {
                        self.on_ack(ack);
                    }
                }
                // Keep the consumer threads from blocking while they notice the end.
                Some(_) = self.fetched_rx.recv() => {}
            }
        }
        if let Some(pending) = self.pending_checkpoint.take() {
            if let Ok(outcome) = pending.await {
                self.on_checkpoint_outcome(outcome);
            }
        }
        if let Some(done_rx) = self.request_checkpoints() {
            match tokio::time::timeout(Duration::from_secs(5), done_rx).await {
                Ok(Ok(outcome)) => {
                    info!(
                        partitions = outcome.written.len(),
                        "final checkpoints written"
                    );
                }
                _ => warn!("final checkpoints not confirmed"),
            }
        }
        for (_, link) in self.links.drain() {
            drop(link.batch_tx);
            link.cancel.cancel();
        }
    }
}

async fn wait_checkpoint(
    pending: &mut Option<oneshot::Receiver<CheckpointOutcome>>,
) -> CheckpointOutcome {
    match pending {
        Some(done_rx) => done_rx.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}
