//! One assigned source partition as a state machine: what it does with each input
//! (an assignment, the writer's stream going up or down, a fetched batch, an ack,
//! a timer tick, a checkpoint outcome) is decided here and returned as
//! [`Effect`]s, which the core ([`crate::core`]) carries out: consumer commands,
//! batches to send, checkpoint commands. Nothing here does I/O or reads the
//! clock, so every decision is tested with explicit instants.
//!
//! # States
//!
//! | state | what it does | left for |
//! | --- | --- | --- |
//! | `WaitingForLink` | nothing fetched; waits for its writer's stream (and a consumer for its flow) | `Running` (started), `Halted` (no consumer), `Releasing`, `Released` (unassigned) |
//! | `Running { restart_pending, paused }` | assigned in the consumer at its committed position, sending batches; `paused` while its window is full, `restart_pending` until the first batch (flagged `restart`) is sent | `WaitingForLink` (stream down, assignment moved to another writer), `Halted` (a failed ack, a refusal by the source cluster), `Held` (the source refused its position), `Fenced`, `Releasing`, `Released` |
//! | `Halted { retry_at }` | stopped after a failure, reported under `errors/`; at `retry_at` (after [`DELIVERY_RETRY`], the retry backoff, or the source cluster's pause after a refusal) it starts again from its committed position | `WaitingForLink` (retry due), `Releasing`, `Released` |
//! | `Fenced` | another owner holds the partition (stale epoch, checkpoint refused): nothing more is fetched, sent or checkpointed | `WaitingForLink` (a new assignment), `Released` (released or unassigned: nothing written) |
//! | `Held { store_again_at }` | the source no longer has its position (a retention gap, a recreated topic, see `hold.rs`): nothing more is fetched, the hold is stored under `holds/` (again at `store_again_at`, in case the write failed), acks of what was sent still count | `Releasing` (the leader takes it back), `Released`, `Halted` (a failed ack) |
//! | `Releasing { deadline }` | the leader asked for it back: nothing more is fetched; once the acks of what was sent arrived, or at `deadline` ([`RELEASE_GRACE`]), the final checkpoint and the assignment's deletion are written together | `Released`, `WaitingForLink` (assigned again) |
//! | `Released` | given back or unassigned; the core forgets it | (final) |
//!
//! Every stop bumps the partition's **generation**: batches fetched under an
//! older one are dropped, and a stop also empties the in-flight window (only
//! `Running` and `Releasing` partitions have batches in flight), so acks of
//! batches sent before a restart find nothing and are dropped; their records are
//! sent again from the committed position.

mod hold;
mod rate;

use std::time::Duration;

use kmirror_common::schema::{Checkpoint, PartitionHold};
use kmirror_common::{MemberId, PartitionKey};
use kmirror_proto::packed::{PackedBatch, PackedSummary};
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, SourcePartition, WorkerPartition};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::budget::Reservation;
use crate::checkpointer::CheckpointEntry;
use crate::watcher::HeldAssignment;
use crate::window::{Committed, Window};
use rate::{rate_outdated, RateMeter};

/// Retry delay after a delivery failure (the writer replaced its producer).
pub const DELIVERY_RETRY: Duration = Duration::from_millis(500);
/// How long a partition being released waits for the acks of what it sent
/// before it gives up on them (the next owner then sends them again). Shorter
/// than the leader's `RELEASE_TIMEOUT_MS`.
pub const RELEASE_GRACE: Duration = Duration::from_secs(15);

/// Settings every partition of the fetcher shares.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unacknowledged batches before the partition is paused.
    pub max_in_flight_batches: usize,
    /// Wait before retrying a partition that could not progress.
    pub retry_backoff: Duration,
}

/// What the core does on a partition's behalf.
// Effects live for one call, and `Send` is the common one: boxing its batch
// would cost an allocation per batch for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Effect {
    /// Consumer: fetch the partition from `offset` (`None`: from the beginning)
    /// under `generation`.
    Assign {
        offset: Option<i64>,
        generation: u64,
    },
    /// Consumer: stop fetching the partition.
    Unassign,
    /// Consumer: hold the partition (its window is full).
    Pause,
    /// Consumer: fetch the partition again from the fetcher's own position.
    Resume,
    /// Start the partition when its writer's stream is open and its flow has a
    /// consumer: the core checks both, then calls [`Partition::start`],
    /// [`Partition::link_unavailable`] or [`Partition::source_unavailable`].
    Start,
    /// Send the batch to the partition's writer (the core adds its trace
    /// context, opened from `summary`).
    Send {
        batch: Batch,
        summary: PackedSummary,
    },
    /// Report under `errors/` why the partition cannot progress, at `offset`.
    ReportError { message: String, offset: i64 },
    /// The partition progresses again: remove its error report.
    ClearError,
    /// Store the hold (the source no longer has the partition's position) and
    /// its audit event, if the assignment is still `assignment_raw`.
    Hold {
        assignment_raw: Vec<u8>,
        hold: PartitionHold,
    },
    /// Give the partition back: the final checkpoint (when it moved) and the
    /// deletion of the assignment, if the assignment is still `assignment_raw`.
    Release {
        assignment_raw: Vec<u8>,
        checkpoint_opt: Option<Checkpoint>,
    },
}

/// Whether a fetched batch can go to the writer, as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The writer's stream is open and the member's lease is live.
    Open,
    /// The member is past its lease deadline: its partitions may already run
    /// elsewhere, so it sends nothing.
    LeaseExpired,
    /// The writer's stream is not open.
    WriterUnreachable,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    WaitingForLink,
    Running { restart_pending: bool, paused: bool },
    Halted { retry_at: Instant },
    Held { store_again_at: Instant },
    Fenced,
    Releasing { deadline: Instant },
    Released,
}

/// One assigned partition (see the module doc for its states).
#[derive(Debug)]
pub struct Partition {
    key: PartitionKey,
    held: HeldAssignment,
    limits: Limits,
    state: State,
    window: Window,
    next_seq: u64,
    generation: u64,
    /// `next_offset` of the last checkpoint written.
    written: Option<i64>,
    /// Records/s in the last checkpoint written, and when it was written.
    rate_written: Option<(f64, Instant)>,
    /// Why the partition cannot progress (reported to etcd until it does).
    error: Option<String>,
    /// Why the partition is held, while it is (see `hold.rs`).
    hold_opt: Option<PartitionHold>,
    meter: RateMeter,
}

impl Partition {
    /// A partition newly assigned here, at its checkpoint (the beginning without
    /// one). One assigned already releasing (given back before this fetcher ran
    /// it, as after a restart) is released at once: nothing is in flight.
    pub fn assigned(
        key: PartitionKey,
        held: HeldAssignment,
        checkpoint_opt: Option<&Checkpoint>,
        limits: Limits,
        now: Instant,
    ) -> (Self, Vec<Effect>) {
        let committed = match checkpoint_opt {
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
            info!(partition = %key, epoch = %held.assignment.epoch, writer = %held.assignment.writer, from = committed.next_offset, "partition assigned here");
        }
        let mut partition = Self {
            key,
            held,
            limits,
            state: State::WaitingForLink,
            window: Window::new(committed),
            next_seq: 1,
            generation: 0,
            written: checkpoint_opt.map(|checkpoint| checkpoint.next_offset),
            rate_written: None,
            error: None,
            hold_opt: None,
            meter: RateMeter::default(),
        };
        let effects = if releasing {
            partition.begin_release(now)
        } else {
            Vec::new()
        };
        (partition, effects)
    }

    pub fn key(&self) -> &PartitionKey {
        &self.key
    }

    pub fn writer(&self) -> &MemberId {
        &self.held.assignment.writer
    }

    pub fn held_raw(&self) -> &[u8] {
        &self.held.raw
    }

    pub fn committed(&self) -> Committed {
        self.window.committed()
    }

    /// Batches sent and not yet part of the committed position.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    pub fn is_waiting_for_link(&self) -> bool {
        self.state == State::WaitingForLink
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    pub fn is_fenced(&self) -> bool {
        self.state == State::Fenced
    }

    /// Given back or unassigned: the core forgets it.
    pub fn is_released(&self) -> bool {
        self.state == State::Released
    }

    /// The assignment's stored bytes changed (a new epoch, writer, destination,
    /// or the leader asking for the partition back).
    pub fn on_assignment_changed(&mut self, held: HeldAssignment, now: Instant) -> Vec<Effect> {
        if held.raw == self.held.raw {
            return Vec::new();
        }
        if held.assignment.is_releasing() {
            self.held = held;
            return self.begin_release(now);
        }
        let before = &self.held.assignment;
        let after = &held.assignment;
        let restart = before.writer != after.writer
            || before.dest_topic != after.dest_topic
            || before.dest_partitions != after.dest_partitions
            || before.source_partitions != after.source_partitions
            || matches!(self.state, State::Fenced | State::Releasing { .. });
        info!(partition = %self.key, epoch = %after.epoch, writer = %after.writer, restart, "assignment changed");
        self.held = held;
        if !restart {
            return Vec::new();
        }
        self.state = State::WaitingForLink;
        self.stop()
    }

    /// Its flow's source cluster settings changed: the core replaces the flow's
    /// consumer, and the partition starts again under the new one.
    pub fn on_source_changed(&mut self) {
        self.state = State::WaitingForLink;
    }

    /// No longer assigned here.
    pub fn on_unassigned(&mut self) -> Vec<Effect> {
        info!(partition = %self.key, "partition no longer assigned here");
        let mut effects = self.stop();
        if self.error.is_some() {
            effects.push(Effect::ClearError);
        }
        self.state = State::Released;
        effects
    }

    /// Starts (or restarts) the partition from its committed position: the
    /// writer's stream is open and the flow has a consumer.
    pub fn start(&mut self) -> Vec<Effect> {
        if self.state == State::Fenced {
            return Vec::new();
        }
        self.generation += 1;
        self.window.clear();
        self.hold_opt = None;
        self.state = State::Running {
            restart_pending: true,
            paused: false,
        };
        let next_offset = self.window.committed().next_offset;
        debug!(partition = %self.key, generation = self.generation, from = next_offset, "partition starting");
        vec![Effect::Assign {
            offset: (next_offset >= 0).then_some(next_offset),
            generation: self.generation,
        }]
    }

    /// It cannot start: its writer's stream is not open.
    pub fn link_unavailable(&mut self) {
        if self.state != State::Fenced {
            self.state = State::WaitingForLink;
        }
    }

    /// It cannot start: its flow's source is unknown (`error_opt` `None`) or no
    /// consumer can be created for it. Retried after the backoff.
    pub fn source_unavailable(&mut self, error_opt: Option<String>, now: Instant) -> Vec<Effect> {
        if self.state == State::Fenced {
            return Vec::new();
        }
        self.state = State::Halted {
            retry_at: now + self.limits.retry_backoff,
        };
        match error_opt {
            None => {
                warn!(partition = %self.key, "flow or its source cluster is unknown; retrying later");
                Vec::new()
            }
            Some(message) => self.report_error(message, -1),
        }
    }

    /// Its source cluster refused the fetcher (a login, a TLS handshake, an ACL):
    /// it stops, and starts again after `retry_in`. `error_opt` `None`: the
    /// refusal is reported already.
    pub fn source_refused(
        &mut self,
        error_opt: Option<String>,
        retry_in: Duration,
        now: Instant,
    ) -> Vec<Effect> {
        if matches!(
            self.state,
            State::Fenced | State::Releasing { .. } | State::Released
        ) {
            return Vec::new();
        }
        let mut effects = self.halt(retry_in, now);
        if let Some(message) = error_opt {
            warn!(partition = %self.key, error = %message, retry_in_secs = retry_in.as_secs_f64(), "source cluster refused the fetcher; retrying after its pause");
            effects.extend(self.report_error(message, -1));
        }
        effects
    }

    /// Its writer's stream opened.
    pub fn on_link_up(&self) -> Vec<Effect> {
        if self.state == State::WaitingForLink {
            vec![Effect::Start]
        } else {
            Vec::new()
        }
    }

    /// Its writer's stream broke: a running partition waits for it to open again.
    pub fn on_link_down(&mut self) -> Vec<Effect> {
        if !self.is_running() {
            return Vec::new();
        }
        let effects = self.stop();
        self.state = State::WaitingForLink;
        effects
    }

    /// Its writer's stream was closed (the writer left or moved to another
    /// address): whatever it had in flight there is dropped.
    pub fn on_link_closed(&mut self) -> Vec<Effect> {
        let effects = self.stop();
        if self.is_running() {
            self.state = State::WaitingForLink;
        }
        effects
    }

    /// A batch the consumer fetched under `generation` (reading from `read_from`,
    /// when the consumer knows where it read from). It is numbered, enters the
    /// in-flight window (the partition pauses once the window is full) and goes to
    /// the writer.
    // Each argument is a distinct input of this pure step, as the core holds them.
    #[allow(clippy::too_many_arguments)]
    pub fn on_fetched(
        &mut self,
        generation: u64,
        packed: PackedBatch,
        read_from: Option<i64>,
        next_offset: i64,
        reservation: Reservation,
        route: Route,
        now: Instant,
    ) -> Vec<Effect> {
        let State::Running {
            restart_pending,
            paused,
        } = self.state
        else {
            return Vec::new();
        };
        if self.generation != generation {
            return Vec::new();
        }
        match route {
            Route::Open => {}
            // The batch is not sent, and the consumer has moved past it: the
            // partition stops and starts again from its committed position once
            // the lease is back, so nothing after it goes out around the gap.
            Route::LeaseExpired => {
                info!(partition = %self.key, retry_in_secs = self.limits.retry_backoff.as_secs_f64(), "past the lease deadline: stopping the partition until the lease is renewed");
                return self.halt(self.limits.retry_backoff, now);
            }
            Route::WriterUnreachable => return self.on_send_failed(),
        }
        // The consumer reads on from where the last batch (or skip) it handed
        // over ended; a batch that does not start there follows one that never
        // reached the window. Sent, it would write around the gap.
        let expected = self.window.sent_up_to();
        if let Some(read_from) =
            read_from.filter(|&read_from| expected >= 0 && read_from != expected)
        {
            warn!(partition = %self.key, read_from, expected, "a fetched batch does not follow the last one sent; restarting the partition from its committed position");
            return self.halt(DELIVERY_RETRY, now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.window.push(seq, next_offset, reservation);
        let summary = packed.summary;
        self.meter.add(
            summary.record_count as usize,
            summary.key_value_bytes as usize,
            now,
        );
        let assignment = &self.held.assignment;
        let batch = Batch {
            source: Some(source_partition(&self.key)),
            dest_topic: assignment.dest_topic.clone(),
            epoch: assignment.epoch.0,
            seq,
            restart: restart_pending,
            next_offset,
            records: packed.records,
            base_offset: packed.base_offset,
            record_count: packed.record_count,
            trace_context: Default::default(),
            source_partition_count: assignment.source_partitions,
            dest_partition_count: assignment.dest_partitions,
            read_from,
        };
        if restart_pending {
            debug!(partition = %self.key, seq, read_from, next_offset, "first batch since the start sent");
        }
        let window_full = self.window.len() >= self.limits.max_in_flight_batches;
        let mut effects = Vec::new();
        if window_full && !paused {
            effects.push(Effect::Pause);
        }
        self.state = State::Running {
            restart_pending: false,
            paused: paused || window_full,
        };
        effects.push(Effect::Send { batch, summary });
        effects
    }

    /// The consumer moved past offsets that hold no record under `generation`.
    pub fn on_skipped(&mut self, generation: u64, next_offset: i64) {
        if self.generation == generation && self.is_running() {
            self.window.skip_to(next_offset);
        }
    }

    /// A batch could not be handed to the writer's stream (it is gone; its down
    /// event restarts the writer's partitions).
    pub fn on_send_failed(&mut self) -> Vec<Effect> {
        self.state = State::WaitingForLink;
        self.stop()
    }

    /// The writer's ack (or error) for one of its batches. Acks arrive in the
    /// order the batches were sent; one for a batch no longer in the window (sent
    /// before a restart) is dropped.
    pub fn on_ack(&mut self, ack: BatchAck, now: Instant) -> Vec<Effect> {
        if !self.window.contains(ack.seq) {
            return Vec::new();
        }
        if matches!(self.state, State::Releasing { .. }) {
            match &ack.error {
                None => {
                    self.window
                        .ack(ack.seq, ack.dest_partition, ack.dest_offset);
                }
                Some(error) if error.kind() == ErrorKind::PartitionHalted => {}
                Some(_) => self.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                ),
            }
            return self.finish_release_when_settled(now);
        }
        let Some(error) = ack.error else {
            self.window
                .ack(ack.seq, ack.dest_partition, ack.dest_offset);
            let mut effects = Vec::new();
            if self.error.take().is_some() {
                info!(partition = %self.key, "partition progressing again");
                effects.push(Effect::ClearError);
            }
            if let State::Running {
                restart_pending,
                paused: true,
            } = self.state
            {
                if self.window.len() < self.limits.max_in_flight_batches {
                    self.state = State::Running {
                        restart_pending,
                        paused: false,
                    };
                    effects.push(Effect::Resume);
                }
            }
            return effects;
        };
        let kind = ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Unspecified);
        match kind {
            // A consequence of an earlier batch's failure, whose own ack restarts
            // the partition.
            ErrorKind::PartitionHalted => Vec::new(),
            ErrorKind::StaleEpoch => {
                warn!(partition = %self.key, error = %error.message, "writer holds a newer owner for this partition; stopping it");
                let effects = self.stop();
                self.state = State::Fenced;
                effects
            }
            ErrorKind::DeliveryFailed => {
                self.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                );
                let committed = self.window.committed().next_offset;
                warn!(partition = %self.key, error = %error.message, restart_from = committed, "delivery failed; resending from the committed offset");
                let mut effects = self.report_error(error.message, committed);
                effects.extend(self.halt(DELIVERY_RETRY, now));
                effects
            }
            ErrorKind::Unspecified
            | ErrorKind::RecordTooLarge
            | ErrorKind::DestinationMissing
            | ErrorKind::UnknownFlow
            | ErrorKind::Rejected => {
                self.window.fail(
                    ack.seq,
                    ack.committed_offset,
                    ack.dest_partition,
                    ack.dest_offset,
                );
                let committed = self.window.committed().next_offset;
                let offset = if error.offset >= 0 {
                    error.offset
                } else {
                    committed
                };
                warn!(partition = %self.key, offset, error = %error.message, retry_in_secs = self.limits.retry_backoff.as_secs_f64(), "partition cannot progress; retrying later");
                let mut effects = self.report_error(error.message, offset);
                effects.extend(self.halt(self.limits.retry_backoff, now));
                effects
            }
        }
    }

    /// The checkpoint interval's tick: a halted partition whose retry is due
    /// starts again, a releasing one past its deadline is given back, and the
    /// rate is sampled.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        let effects = match self.state {
            State::Halted { retry_at } if retry_at <= now => {
                self.state = State::WaitingForLink;
                vec![Effect::Start]
            }
            State::Releasing { deadline } if deadline <= now => {
                self.finish_release_when_settled(now)
            }
            State::Held { store_again_at } if store_again_at <= now => self.store_hold(now),
            _ => Vec::new(),
        };
        self.meter.sample(now);
        effects
    }

    /// The checkpoint to write, if its position moved since the last one written
    /// or its rate no longer tells the truth. A fenced partition writes nothing.
    pub fn checkpoint_due(&self, now: Instant, now_ms: i64) -> Option<CheckpointEntry> {
        if self.state == State::Fenced {
            return None;
        }
        let committed = self.window.committed();
        let moved = self.written != Some(committed.next_offset);
        let due = committed.next_offset >= 0
            && (moved || rate_outdated(self.meter.records_per_sec, self.rate_written, now));
        due.then(|| CheckpointEntry {
            partition: self.key.clone(),
            assignment_raw: self.held.raw.clone(),
            checkpoint: Checkpoint {
                next_offset: committed.next_offset,
                dest_partition: committed.dest_partition,
                dest_offset: committed.dest_offset,
                epoch: self.held.assignment.epoch,
                updated_ms: now_ms,
                records_per_sec: self.meter.records_per_sec,
                bytes_per_sec: self.meter.bytes_per_sec,
            },
        })
    }

    /// Its checkpoint was written.
    pub fn on_checkpoint_written(&mut self, checkpoint: &Checkpoint, now: Instant) {
        debug!(partition = %self.key, next_offset = checkpoint.next_offset, "checkpoint written");
        self.written = Some(checkpoint.next_offset);
        self.rate_written = Some((checkpoint.records_per_sec, now));
    }

    /// Its checkpoint was refused: the assignment `refused_raw` the write compared
    /// is no longer the stored one. Only that assignment is stale: the partition
    /// may already have restarted under a newer one the watcher delivered.
    pub fn on_checkpoint_refused(&mut self, refused_raw: &[u8]) -> Vec<Effect> {
        if self.held.raw != refused_raw {
            return Vec::new();
        }
        warn!(partition = %self.key, "checkpoint refused: the partition's assignment changed; stopping it");
        let effects = self.stop();
        self.state = State::Fenced;
        effects
    }

    /// The fetcher stops: batches still coming from the consumer are dropped,
    /// acks of what is in flight still move the committed position.
    pub fn on_shutdown(&mut self) {
        self.generation += 1;
    }

    /// Stops fetching and forgets what is in flight (the state stays).
    pub fn stop(&mut self) -> Vec<Effect> {
        let effects = self.stop_fetching();
        self.window.clear();
        effects
    }

    pub fn status(&self) -> WorkerPartition {
        WorkerPartition {
            source: Some(source_partition(&self.key)),
            epoch: self.held.assignment.epoch.0,
            next_offset: self.window.committed().next_offset,
            in_flight_batches: self.window.len() as u32,
            error: self
                .error
                .clone()
                .or_else(|| self.hold_opt.as_ref().map(|hold| hold.message.clone()))
                .unwrap_or_default(),
        }
    }

    /// Stops fetching; what is in flight stays in the window, so the acks still
    /// on their way move the committed position.
    fn stop_fetching(&mut self) -> Vec<Effect> {
        self.generation += 1;
        if let State::Running {
            restart_pending, ..
        } = self.state
        {
            self.state = State::Running {
                restart_pending,
                paused: false,
            };
        }
        vec![Effect::Unassign]
    }

    fn halt(&mut self, retry_after: Duration, now: Instant) -> Vec<Effect> {
        let effects = self.stop();
        self.state = State::Halted {
            retry_at: now + retry_after,
        };
        effects
    }

    /// The leader asked for the partition back: fetch nothing more and give it
    /// back once what was sent is acknowledged.
    fn begin_release(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = self.stop_fetching();
        if self.state == State::Fenced {
            // Another owner's: nothing of it is this fetcher's to write.
            self.state = State::Released;
            return effects;
        }
        info!(partition = %self.key, in_flight_batches = self.window.len(), state = ?self.state, "releasing the partition");
        self.state = State::Releasing {
            deadline: now + RELEASE_GRACE,
        };
        effects.extend(self.finish_release_when_settled(now));
        effects
    }

    /// Gives a releasing partition back once nothing it sent awaits an ack: its
    /// final checkpoint and the deletion of its assignment in one transaction that
    /// compares the assignment, so a fetcher that lost it writes nothing.
    fn finish_release_when_settled(&mut self, now: Instant) -> Vec<Effect> {
        let State::Releasing { deadline } = self.state else {
            return Vec::new();
        };
        if !self.window.is_empty() {
            if now < deadline {
                return Vec::new();
            }
            warn!(partition = %self.key, batches = self.window.len(), "no ack for batches sent before the release; the next owner sends them again");
        }
        self.state = State::Released;
        let committed = self.window.committed();
        let checkpoint_opt = (committed.next_offset >= 0
            && self.written != Some(committed.next_offset))
        .then(|| Checkpoint {
            next_offset: committed.next_offset,
            dest_partition: committed.dest_partition,
            dest_offset: committed.dest_offset,
            epoch: self.held.assignment.epoch,
            updated_ms: kmirror_common::now_ms(),
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        });
        info!(partition = %self.key, next_offset = committed.next_offset, "partition released");
        let mut effects = vec![Effect::Release {
            assignment_raw: self.held.raw.clone(),
            checkpoint_opt,
        }];
        if self.error.is_some() {
            effects.push(Effect::ClearError);
        }
        effects
    }

    /// Reports why the partition cannot progress, once per distinct message.
    fn report_error(&mut self, message: String, offset: i64) -> Vec<Effect> {
        if self.error.as_deref() == Some(message.as_str()) {
            return Vec::new();
        }
        self.error = Some(message.clone());
        vec![Effect::ReportError { message, offset }]
    }
}

fn source_partition(key: &PartitionKey) -> SourcePartition {
    SourcePartition {
        flow: key.flow.to_string(),
        topic: key.topic.clone(),
        partition: key.partition,
    }
}

#[cfg(test)]
mod tests;
