//! The fetcher's core: one actor that owns every assigned partition's state.
//!
//! It turns fetched records into batches for the partition's writer, tracks each
//! partition's in-flight window (pausing the partition when it is full), advances
//! the committed position over acknowledged batches, restarts a partition from its
//! committed position after any failure, and hands checkpoints to the
//! checkpointer. Nothing else mutates partition state, so there are no locks.

use std::collections::HashMap;
use std::time::Duration;

use kmirror_common::membership::LeaseGuard;
use kmirror_common::schema::{Checkpoint, ClusterSpec, PartitionError};
use kmirror_common::{FlowName, MemberId, PartitionKey};
use kmirror_proto::packed::PackedBatch;
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, SourcePartition, WorkerPartition};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use kmirror_proto::frame::Compression;

use crate::budget::{InFlightBudget, Reservation};
use crate::checkpointer::{CheckpointCommand, CheckpointEntry, CheckpointOutcome};
use crate::consumer::{self, ConsumerCommand, ConsumerHandle, Fetched};
use crate::link::{Link, LinkEvent};
use crate::watcher::{Desired, HeldAssignment};
use crate::window::{Committed, Window};

/// Retry delay after a delivery failure (the writer replaced its producer).
const DELIVERY_RETRY: Duration = Duration::from_millis(500);
/// How long a partition being released waits for the acks of what it sent
/// before it gives up on them (the next owner then sends them again). Shorter
/// than the leader's `RELEASE_TIMEOUT_MS`.
const RELEASE_GRACE: Duration = Duration::from_secs(15);
/// Time constant of the smoothed rates.
const RATE_TIME_CONSTANT: Duration = Duration::from_secs(2);
/// A partition that sent nothing for this long has a rate of exactly 0.
const IDLE_AFTER: Duration = Duration::from_secs(5);
/// Least time between two checkpoints written only because the rate changed
/// (the position moved in neither): an idle partition's decaying rate costs etcd
/// a few writes, then none.
const RATE_REFRESH: Duration = Duration::from_secs(5);

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Assigned in the consumer, sending batches.
    Running,
    /// The writer's stream is not open; starts when it is.
    WaitingForLink,
    /// Stopped after a failure; starts again from the committed position.
    Halted { retry_at: Instant },
    /// Another owner holds the partition: wait for a new assignment.
    Fenced,
    /// Its flow stops (paused, deleted, completed): nothing more is fetched; once
    /// the acks of what was sent arrived (or `deadline` passed), the final
    /// checkpoint is written and the assignment given back.
    Releasing { deadline: Instant },
}

struct PartitionState {
    held: HeldAssignment,
    window: Window,
    next_seq: u64,
    generation: u64,
    phase: Phase,
    restart_pending: bool,
    paused: bool,
    /// `next_offset` of the last checkpoint written.
    written: Option<i64>,
    /// Records/s in the last checkpoint written, and when it was written.
    rate_written: Option<(f64, Instant)>,
    /// Why the partition cannot progress (reported to etcd until it does).
    error: Option<String>,
    meter: RateMeter,
}

/// Smoothed records/s and bytes/s a partition sends, for load-based assignment
/// and for what `status`, `members` and `top` show. An idle partition's rate
/// falls to exactly 0.
#[derive(Debug, Default)]
struct RateMeter {
    records: u64,
    bytes: u64,
    last_sample_opt: Option<Instant>,
    last_sent_opt: Option<Instant>,
    records_per_sec: f64,
    bytes_per_sec: f64,
}

impl RateMeter {
    fn add(&mut self, records: usize, bytes: usize, now: Instant) {
        self.records += records as u64;
        self.bytes += bytes as u64;
        self.last_sent_opt = Some(now);
    }

    /// Folds what was counted since the last sample into the smoothed rates
    /// (exponentially, with time constant [`RATE_TIME_CONSTANT`] whatever the
    /// sampling interval).
    fn sample(&mut self, now: Instant) {
        let Some(last_sample) = self.last_sample_opt.replace(now) else {
            return;
        };
        let elapsed = now.duration_since(last_sample).as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        let weight = 1.0 - (-elapsed / RATE_TIME_CONSTANT.as_secs_f64()).exp();
        let records_per_sec = self.records as f64 / elapsed;
        let bytes_per_sec = self.bytes as f64 / elapsed;
        self.records_per_sec += weight * (records_per_sec - self.records_per_sec);
        self.bytes_per_sec += weight * (bytes_per_sec - self.bytes_per_sec);
        self.records = 0;
        self.bytes = 0;
        let idle = self
            .last_sent_opt
            .is_none_or(|last_sent| now.duration_since(last_sent) >= IDLE_AFTER);
        if idle {
            self.records_per_sec = 0.0;
            self.bytes_per_sec = 0.0;
        }
    }
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
    partitions: HashMap<PartitionKey, PartitionState>,
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
                Some(event) = self.link_events_rx.recv() => self.on_link_event(event).await,
                outcome = wait_checkpoint(&mut self.pending_checkpoint) => self.on_checkpoint_outcome(outcome),
                Some(desired) = self.desired_rx.recv() => self.on_desired(desired),
                Some(fetched) = self.fetched_rx.recv() => self.on_fetched(fetched).await,
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.drain(lease_lost).await;
    }

    fn on_desired(&mut self, desired: Desired) {
        self.writer_addresses = desired.writers;
        let previous_sources = std::mem::replace(&mut self.sources, desired.sources);
        // A flow whose source cluster settings changed gets a fresh consumer.
        let changed_flows: Vec<FlowName> = self
            .consumers
            .iter()
            .filter(|(flow, handle)| self.sources.get(*flow) != Some(&handle.cluster))
            .map(|(flow, _)| flow.clone())
            .collect();
        drop(previous_sources);
        for flow in &changed_flows {
            self.consumers.remove(flow);
        }

        let removed: Vec<PartitionKey> = self
            .partitions
            .keys()
            .filter(|partition| !desired.assignments.contains_key(*partition))
            .cloned()
            .collect();
        for partition in removed {
            info!(%partition, "partition no longer assigned here");
            self.stop(&partition);
            self.telemetry.forget(&partition);
            if let Some(state) = self.partitions.remove(&partition) {
                if state.error.is_some() {
                    let _ = self
                        .checkpoint_tx
                        .send(CheckpointCommand::ClearError { partition });
                }
            }
        }

        for (partition, held) in desired.assignments {
            match self.partitions.get_mut(&partition) {
                None => {
                    let committed = match desired.checkpoints.get(&partition) {
                        Some(checkpoint) => Committed {
                            next_offset: checkpoint.next_offset,
                            dest_partition: checkpoint.dest_partition,
                            dest_offset: checkpoint.dest_offset,
                        },
                        None => Committed {
                            next_offset: -1,
                            dest_partition: -1,
                            dest_offset: -1,
                        },
                    };
                    let releasing = held.assignment.is_releasing();
                    if !releasing {
                        info!(%partition, epoch = %held.assignment.epoch, writer = %held.assignment.writer, from = committed.next_offset, "partition assigned here");
                    }
                    self.partitions.insert(
                        partition.clone(),
                        PartitionState {
                            written: desired
                                .checkpoints
                                .get(&partition)
                                .map(|checkpoint| checkpoint.next_offset),
                            rate_written: None,
                            held,
                            window: Window::new(committed),
                            next_seq: 1,
                            generation: 0,
                            phase: Phase::WaitingForLink,
                            restart_pending: true,
                            paused: false,
                            error: None,
                            meter: RateMeter::default(),
                        },
                    );
                    if releasing {
                        // Given back before this fetcher ran it (a restart): there
                        // is nothing in flight to wait for.
                        self.begin_release(&partition);
                    }
                }
                Some(state) if state.held.raw != held.raw && held.assignment.is_releasing() => {
                    state.held = held;
                    self.begin_release(&partition);
                }
                Some(state) if state.held.raw != held.raw => {
                    let before = &state.held.assignment;
                    let after = &held.assignment;
                    let restart = before.writer != after.writer
                        || before.dest_topic != after.dest_topic
                        || before.dest_partitions != after.dest_partitions
                        || before.source_partitions != after.source_partitions
                        || matches!(state.phase, Phase::Fenced | Phase::Releasing { .. });
                    info!(%partition, epoch = %after.epoch, writer = %after.writer, restart, "assignment changed");
                    state.held = held;
                    if restart {
                        state.phase = Phase::WaitingForLink;
                        self.stop(&partition);
                    }
                }
                Some(state) if changed_flows.contains(&partition.flow) => {
                    state.phase = Phase::WaitingForLink;
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
            for partition in affected {
                self.stop(&partition);
            }
        }
        self.reconcile_links();
        self.consumers.retain(|flow, _| {
            self.partitions
                .keys()
                .any(|partition| &partition.flow == flow)
        });
        let waiting: Vec<PartitionKey> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.phase == Phase::WaitingForLink)
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in waiting {
            self.start(&partition);
        }
    }

    /// Opens a stream to every writer in use and closes the others; a writer that
    /// moved to a new address gets a new stream.
    fn reconcile_links(&mut self) {
        let in_use: std::collections::HashSet<MemberId> = self
            .partitions
            .values()
            .map(|state| state.held.assignment.writer.clone())
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
            let on_writer: Vec<PartitionKey> = self
                .partitions
                .iter()
                .filter(|(_, state)| state.held.assignment.writer == writer)
                .map(|(partition, _)| partition.clone())
                .collect();
            for partition in on_writer {
                self.stop(&partition);
                if let Some(state) = self.partitions.get_mut(&partition) {
                    if state.phase == Phase::Running {
                        state.phase = Phase::WaitingForLink;
                    }
                }
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

    /// Starts (or restarts) a partition from its committed position, if its
    /// writer's stream is open.
    fn start(&mut self, partition: &PartitionKey) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if state.phase == Phase::Fenced {
            return;
        }
        let link_up = self
            .links
            .get(&state.held.assignment.writer)
            .is_some_and(|link| link.batch_tx.is_some());
        if !link_up {
            state.phase = Phase::WaitingForLink;
            return;
        }
        if !self.consumers.contains_key(&partition.flow) {
            let Some(cluster) = self.sources.get(&partition.flow).cloned() else {
                state.phase = Phase::Halted {
                    retry_at: Instant::now() + self.settings.retry_backoff,
                };
                warn!(%partition, "flow or its source cluster is unknown; retrying later");
                return;
            };
            match consumer::spawn(
                partition.flow.clone(),
                cluster,
                self.fetched_tx.clone(),
                self.budget.clone(),
            ) {
                Ok(handle) => {
                    self.consumers.insert(partition.flow.clone(), handle);
                }
                Err(error) => {
                    let message = format!(
                        "cannot create a consumer for the source of flow {}: {error}",
                        partition.flow
                    );
                    state.phase = Phase::Halted {
                        retry_at: Instant::now() + self.settings.retry_backoff,
                    };
                    report_error(&self.checkpoint_tx, &self.me, partition, state, message, -1);
                    return;
                }
            }
        }
        let consumer = self
            .consumers
            .get(&partition.flow)
            .expect("consumer ensured");
        self.telemetry.partition_started(partition);
        state.generation += 1;
        state.window.clear();
        state.restart_pending = true;
        state.paused = false;
        state.phase = Phase::Running;
        let next_offset = state.window.committed().next_offset;
        consumer.send(ConsumerCommand::Assign {
            topic: partition.topic.clone(),
            partition: partition.partition,
            offset: (next_offset >= 0).then_some(next_offset),
            generation: state.generation,
        });
    }

    /// Stops fetching a partition and forgets what it has in flight.
    fn stop(&mut self, partition: &PartitionKey) {
        self.stop_fetching(partition);
        if let Some(state) = self.partitions.get_mut(partition) {
            state.window.clear();
        }
    }

    /// Stops fetching a partition; what it has in flight stays in its window, so
    /// the acks still on their way move its committed position.
    fn stop_fetching(&mut self, partition: &PartitionKey) {
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        state.generation += 1;
        state.paused = false;
        if let Some(consumer) = self.consumers.get(&partition.flow) {
            consumer.send(ConsumerCommand::Unassign {
                topic: partition.topic.clone(),
                partition: partition.partition,
            });
        }
    }

    /// The leader asked for the partition back: fetch nothing more and give it
    /// back once what was sent is acknowledged.
    fn begin_release(&mut self, partition: &PartitionKey) {
        self.stop_fetching(partition);
        let Some(state) = self.partitions.get_mut(partition) else {
            return;
        };
        if state.phase == Phase::Fenced {
            // Another owner's: nothing of it is this fetcher's to write.
            self.partitions.remove(partition);
            self.telemetry.forget(partition);
            return;
        }
        info!(%partition, in_flight_batches = state.window.len(), phase = ?state.phase, "releasing the partition");
        state.phase = Phase::Releasing {
            deadline: Instant::now() + RELEASE_GRACE,
        };
        self.finish_release_when_settled(partition);
    }

    /// Gives a releasing partition back once nothing it sent awaits an ack: its
    /// final checkpoint and the deletion of its assignment in one transaction that
    /// compares the assignment, so a fetcher that lost it writes nothing.
    fn finish_release_when_settled(&mut self, partition: &PartitionKey) {
        let Some(state) = self.partitions.get(partition) else {
            return;
        };
        let Phase::Releasing { deadline } = state.phase else {
            return;
        };
        if !state.window.is_empty() {
            if Instant::now() < deadline {
                return;
            }
            warn!(%partition, batches = state.window.len(), "no ack for batches sent before the release; the next owner sends them again");
        }
        let Some(state) = self.partitions.remove(partition) else {
            return;
        };
        self.telemetry.forget(partition);
        let committed = state.window.committed();
        let checkpoint_opt = (committed.next_offset >= 0
            && state.written != Some(committed.next_offset))
        .then(|| Checkpoint {
            next_offset: committed.next_offset,
            dest_partition: committed.dest_partition,
            dest_offset: committed.dest_offset,
            epoch: state.held.assignment.epoch,
            updated_ms: kmirror_common::now_ms(),
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        });
        info!(%partition, next_offset = committed.next_offset, "partition released");
        let _ = self.checkpoint_tx.send(CheckpointCommand::Release {
            partition: partition.clone(),
            assignment_raw: state.held.raw,
            checkpoint_opt,
        });
        if state.error.is_some() {
            let _ = self.checkpoint_tx.send(CheckpointCommand::ClearError {
                partition: partition.clone(),
            });
        }
    }

    fn halt(&mut self, partition: &PartitionKey, retry_after: Duration) {
        self.stop(partition);
        if let Some(state) = self.partitions.get_mut(partition) {
            state.phase = Phase::Halted {
                retry_at: Instant::now() + retry_after,
            };
        }
    }

    async fn on_fetched(&mut self, fetched: Fetched) {
        match fetched {
            Fetched::Skip {
                partition,
                generation,
                next_offset,
            } => {
                if let Some(state) = self.partitions.get_mut(&partition) {
                    if state.generation == generation && state.phase == Phase::Running {
                        state.window.skip_to(next_offset);
                    }
                }
            }
            Fetched::Batch {
                partition,
                generation,
                packed,
                next_offset,
                reservation,
            } => {
                self.send_batch(partition, generation, packed, next_offset, reservation)
                    .await
            }
        }
    }

    async fn send_batch(
        &mut self,
        partition: PartitionKey,
        generation: u64,
        packed: PackedBatch,
        next_offset: i64,
        reservation: Reservation,
    ) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if state.generation != generation || state.phase != Phase::Running {
            return;
        }
        if !self.lease.is_live() {
            // A member past its lease deadline writes nothing: its partitions may
            // already run elsewhere.
            return;
        }
        let assignment = &state.held.assignment;
        let Some(batch_tx) = self
            .links
            .get(&assignment.writer)
            .and_then(|link| link.batch_tx.clone())
        else {
            state.phase = Phase::WaitingForLink;
            self.stop(&partition);
            return;
        };
        let seq = state.next_seq;
        state.next_seq += 1;
        state.window.push(seq, next_offset, reservation);
        let summary = &packed.summary;
        state.meter.add(
            summary.record_count as usize,
            summary.key_value_bytes as usize,
            Instant::now(),
        );
        let trace_context =
            self.telemetry
                .batch_sent(&partition, seq, assignment.epoch.0, summary, next_offset);
        let batch = Batch {
            source: Some(SourcePartition {
                flow: partition.flow.to_string(),
                topic: partition.topic.clone(),
                partition: partition.partition,
            }),
            dest_topic: assignment.dest_topic.clone(),
            epoch: assignment.epoch.0,
            seq,
            restart: std::mem::take(&mut state.restart_pending),
            next_offset,
            records: packed.records,
            base_offset: packed.base_offset,
            record_count: packed.record_count,
            trace_context,
            source_partition_count: assignment.source_partitions,
            dest_partition_count: assignment.dest_partitions,
        };
        let window_full = state.window.len() >= self.settings.max_in_flight_batches;
        if window_full && !state.paused {
            state.paused = true;
            if let Some(consumer) = self.consumers.get(&partition.flow) {
                consumer.send(ConsumerCommand::Pause {
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                });
            }
        }
        if batch_tx.send(batch).await.is_err() {
            // The stream is gone; its Down event restarts the writer's partitions.
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.phase = Phase::WaitingForLink;
            }
            self.stop(&partition);
        }
    }

    async fn on_link_event(&mut self, event: LinkEvent) {
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
                let waiting: Vec<PartitionKey> = self
                    .partitions
                    .iter()
                    .filter(|(_, state)| {
                        state.held.assignment.writer == writer
                            && state.phase == Phase::WaitingForLink
                    })
                    .map(|(partition, _)| partition.clone())
                    .collect();
                for partition in waiting {
                    self.start(&partition);
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
                let affected: Vec<PartitionKey> = self
                    .partitions
                    .iter()
                    .filter(|(_, state)| {
                        state.held.assignment.writer == writer && state.phase == Phase::Running
                    })
                    .map(|(partition, _)| partition.clone())
                    .collect();
                for partition in affected {
                    self.stop(&partition);
                    if let Some(state) = self.partitions.get_mut(&partition) {
                        state.phase = Phase::WaitingForLink;
                    }
                }
            }
            LinkEvent::Ack { writer: _, ack } => self.on_ack(ack),
        }
    }

    fn on_ack(&mut self, ack: BatchAck) {
        let Some(partition) = partition_key(ack.source.as_ref()) else {
            return;
        };
        // Ends when the ack is handled: the span covers settling the batch.
        let _settle_span = self.telemetry.batch_acked(&partition, &ack);
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if !state.window.contains(ack.seq) {
            // An ack from before the partition restarted: its records are resent.
            return;
        }
        if matches!(state.phase, Phase::Releasing { .. }) {
            match &ack.error {
                None => {
                    state
                        .window
                        .ack(ack.seq, ack.dest_partition, ack.dest_offset);
                }
                Some(error) if error.kind() == ErrorKind::PartitionHalted => {}
                Some(_) => state.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                ),
            }
            self.finish_release_when_settled(&partition);
            return;
        }
        let Some(error) = ack.error else {
            state
                .window
                .ack(ack.seq, ack.dest_partition, ack.dest_offset);
            if state.error.take().is_some() {
                info!(%partition, "partition progressing again");
                let _ = self.checkpoint_tx.send(CheckpointCommand::ClearError {
                    partition: partition.clone(),
                });
            }
            if state.paused && state.window.len() < self.settings.max_in_flight_batches {
                state.paused = false;
                if let Some(consumer) = self.consumers.get(&partition.flow) {
                    consumer.send(ConsumerCommand::Resume {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                    });
                }
            }
            return;
        };
        let kind = ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Unspecified);
        match kind {
            // A consequence of an earlier batch's failure, whose own ack restarts
            // the partition.
            ErrorKind::PartitionHalted => {}
            ErrorKind::StaleEpoch => {
                warn!(%partition, error = %error.message, "writer holds a newer owner for this partition; stopping it");
                self.stop(&partition);
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.phase = Phase::Fenced;
                }
            }
            ErrorKind::DeliveryFailed => {
                state.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                );
                let committed = state.window.committed().next_offset;
                warn!(%partition, error = %error.message, restart_from = committed, "delivery failed; resending from the committed offset");
                report_error(
                    &self.checkpoint_tx,
                    &self.me,
                    &partition,
                    state,
                    error.message,
                    committed,
                );
                self.halt(&partition, DELIVERY_RETRY);
            }
            ErrorKind::Unspecified
            | ErrorKind::RecordTooLarge
            | ErrorKind::DestinationMissing
            | ErrorKind::UnknownFlow
            | ErrorKind::Rejected => {
                state.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                );
                let committed = state.window.committed().next_offset;
                let offset = if error.offset >= 0 {
                    error.offset
                } else {
                    committed
                };
                warn!(%partition, offset, error = %error.message, retry_in_secs = self.settings.retry_backoff.as_secs_f64(), "partition cannot progress; retrying later");
                report_error(
                    &self.checkpoint_tx,
                    &self.me,
                    &partition,
                    state,
                    error.message,
                    offset,
                );
                self.halt(&partition, self.settings.retry_backoff);
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let due: Vec<PartitionKey> = self
            .partitions
            .iter()
            .filter(
                |(_, state)| matches!(state.phase, Phase::Halted { retry_at } if retry_at <= now),
            )
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in due {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.phase = Phase::WaitingForLink;
            }
            self.start(&partition);
        }
        let overdue: Vec<PartitionKey> = self
            .partitions
            .iter()
            .filter(
                |(_, state)| matches!(state.phase, Phase::Releasing { deadline } if deadline <= now),
            )
            .map(|(partition, _)| partition.clone())
            .collect();
        for partition in overdue {
            self.finish_release_when_settled(&partition);
        }
        for state in self.partitions.values_mut() {
            state.meter.sample(now);
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
                .map(|(partition, state)| (partition, state.window.committed().next_offset)),
            |partition| {
                consumers
                    .get(&partition.flow)?
                    .ends
                    .get(&partition.topic, partition.partition)
            },
        );
    }

    /// Sends the checkpoints that moved since they were last written.
    fn request_checkpoints(&mut self) -> Option<oneshot::Receiver<CheckpointOutcome>> {
        if !self.lease.is_live() {
            return None;
        }
        let now_ms = kmirror_common::now_ms();
        let now = Instant::now();
        let entries: Vec<CheckpointEntry> = self
            .partitions
            .iter()
            .filter(|(_, state)| state.phase != Phase::Fenced)
            .filter_map(|(partition, state)| {
                let committed = state.window.committed();
                let moved = state.written != Some(committed.next_offset);
                (committed.next_offset >= 0
                    && (moved
                        || rate_outdated(state.meter.records_per_sec, state.rate_written, now)))
                .then(|| CheckpointEntry {
                    partition: partition.clone(),
                    assignment_raw: state.held.raw.clone(),
                    checkpoint: Checkpoint {
                        next_offset: committed.next_offset,
                        dest_partition: committed.dest_partition,
                        dest_offset: committed.dest_offset,
                        epoch: state.held.assignment.epoch,
                        updated_ms: now_ms,
                        records_per_sec: state.meter.records_per_sec,
                        bytes_per_sec: state.meter.bytes_per_sec,
                    },
                })
            })
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
        for (partition, checkpoint) in outcome.written {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.written = Some(checkpoint.next_offset);
                state.rate_written = Some((checkpoint.records_per_sec, now));
            }
        }
        for (partition, refused_raw) in outcome.fenced {
            // The watcher may already have delivered the new assignment, and the
            // partition restarted under it: only the assignment the write
            // compared is stale.
            let still_held = self
                .partitions
                .get(&partition)
                .is_some_and(|state| state.held.raw == refused_raw);
            if !still_held {
                continue;
            }
            warn!(%partition, "checkpoint refused: the partition's assignment changed; stopping it");
            self.stop(&partition);
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.phase = Phase::Fenced;
            }
        }
    }

    fn publish_status(&self) {
        let partitions = self
            .partitions
            .iter()
            .map(|(partition, state)| WorkerPartition {
                source: Some(SourcePartition {
                    flow: partition.flow.to_string(),
                    topic: partition.topic.clone(),
                    partition: partition.partition,
                }),
                epoch: state.held.assignment.epoch.0,
                next_offset: state.window.committed().next_offset,
                in_flight_batches: state.window.len() as u32,
                error: state.error.clone().unwrap_or_default(),
            })
            .collect();
        let _ = self.status_tx.send(partitions);
    }

    fn stop_everything(&mut self) {
        let partitions: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        for partition in partitions {
            self.stop(&partition);
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
        for state in self.partitions.values_mut() {
            state.generation += 1;
        }
        self.consumers.clear();
        let in_flight = |partitions: &HashMap<PartitionKey, PartitionState>| {
            partitions
                .values()
                .filter(|state| !state.window.is_empty())
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

/// Whether the rate in the last checkpoint written no longer tells the truth and
/// is worth a write of its own: a fall to 0 at once, other changes at most every
/// [`RATE_REFRESH`].
fn rate_outdated(records_per_sec: f64, rate_written: Option<(f64, Instant)>, now: Instant) -> bool {
    match rate_written {
        None => records_per_sec > 0.0,
        Some((written, _)) if written == records_per_sec => false,
        Some(_) if records_per_sec == 0.0 => true,
        Some((_, written_at)) => now.duration_since(written_at) >= RATE_REFRESH,
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

fn report_error(
    checkpoint_tx: &mpsc::UnboundedSender<CheckpointCommand>,
    me: &MemberId,
    partition: &PartitionKey,
    state: &mut PartitionState,
    message: String,
    offset: i64,
) {
    if state.error.as_deref() == Some(message.as_str()) {
        return;
    }
    state.error = Some(message.clone());
    let _ = checkpoint_tx.send(CheckpointCommand::ReportError {
        partition: partition.clone(),
        error: PartitionError {
            message,
            offset,
            reporter: me.clone(),
            since_ms: kmirror_common::now_ms(),
        },
    });
}

fn partition_key(source: Option<&SourcePartition>) -> Option<PartitionKey> {
    let source = source?;
    let flow = FlowName::new(source.flow.clone()).ok()?;
    Some(PartitionKey::new(
        flow,
        source.topic.clone(),
        source.partition,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_partitions_rate_falls_to_exactly_zero() {
        let start = Instant::now();
        let mut meter = RateMeter::default();
        meter.sample(start);
        for second in 1..=10 {
            let now = start + Duration::from_secs(second);
            meter.add(1_000, 100_000, now);
            meter.sample(now);
        }
        assert!(
            (900.0..=1_000.0).contains(&meter.records_per_sec),
            "{meter:?}"
        );
        let last_sent = start + Duration::from_secs(10);
        meter.sample(last_sent + Duration::from_secs(2));
        assert!(meter.records_per_sec > 0.0 && meter.records_per_sec < 500.0);
        meter.sample(last_sent + IDLE_AFTER);
        assert_eq!((meter.records_per_sec, meter.bytes_per_sec), (0.0, 0.0));
    }

    #[test]
    fn the_rate_smooths_the_same_whatever_the_sampling_interval() {
        let rate_after = |interval: Duration| {
            let start = Instant::now();
            let mut meter = RateMeter::default();
            meter.sample(start);
            let mut now = start;
            while now < start + Duration::from_secs(2) {
                now += interval;
                meter.add((interval.as_millis() * 10) as usize, 0, now);
                meter.sample(now);
            }
            meter.records_per_sec
        };
        let fast = rate_after(Duration::from_millis(200));
        let slow = rate_after(Duration::from_secs(1));
        assert!((fast - slow).abs() < 1.0, "{fast} vs {slow}");
    }

    #[test]
    fn a_rate_is_written_at_once_when_it_falls_to_zero_and_otherwise_seldom() {
        let now = Instant::now();
        let just_written = Some((800.0, now));
        assert!(!rate_outdated(800.0, just_written, now));
        assert!(rate_outdated(0.0, just_written, now));
        assert!(!rate_outdated(
            400.0,
            just_written,
            now + Duration::from_secs(1)
        ));
        assert!(rate_outdated(400.0, just_written, now + RATE_REFRESH));
        assert!(!rate_outdated(0.0, Some((0.0, now)), now + RATE_REFRESH));
    }
}
