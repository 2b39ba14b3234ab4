//! A partition whose position the source refused (offset out of range): the
//! source's log start and end offsets tell whether records were lost to
//! retention, the topic was recreated, or the refusal was passing (a leader
//! change). A lost position holds the partition: nothing more is fetched, the
//! hold is stored for the operator, and the leader takes the partition back.

use kmirror_common::holds::{check_position, PositionCheck};
use tokio::time::Instant;
use tracing::{error, warn};

use super::{Effect, Partition, State, DELIVERY_RETRY};

impl Partition {
    /// The source refused the partition's `position` under `generation`; its log
    /// start and end offsets as read then (`None` when they could not be read).
    pub fn on_out_of_range(
        &mut self,
        generation: u64,
        position: i64,
        watermarks_opt: Option<(i64, i64)>,
        now: Instant,
    ) -> Vec<Effect> {
        if self.generation != generation || !self.is_running() {
            return Vec::new();
        }
        let Some((log_start, log_end)) = watermarks_opt else {
            let message = format!(
                "the source refused offset {position} and its log start and end offsets cannot be read"
            );
            warn!(partition = %self.key, position, "{message}; retrying later");
            let mut effects = self.report_error(message, position);
            effects.extend(self.halt(self.limits.retry_backoff, now));
            return effects;
        };
        let check = check_position(position, log_start, log_end);
        let Some(hold) = check.hold(
            position,
            log_start,
            log_end,
            self.held.assignment.fetcher.clone(),
            kmirror_common::now_ms(),
        ) else {
            // The source has the position after all (a new leader that had not
            // caught up): read it again from the committed position.
            warn!(partition = %self.key, position, log_start, log_end, "the source refused a position it has; restarting the partition");
            return self.halt(DELIVERY_RETRY, now);
        };
        debug_assert!(check != PositionCheck::Readable);
        error!(partition = %self.key, reason = hold.reason.as_str(), position, log_start, log_end, detail = %hold.message, "partition held until an operator resets it");
        // What is in flight stays in the window: its acks still move the
        // committed position up to the position refused.
        let mut effects = self.stop_fetching();
        self.hold_opt = Some(hold);
        effects.extend(self.store_hold(now));
        effects
    }

    pub fn is_held(&self) -> bool {
        matches!(self.state, State::Held { .. })
    }

    /// Stores the hold, and again after the retry backoff until the leader
    /// takes the partition back: a write that failed is made again (one that
    /// succeeded is not repeated, the write requires the hold to be absent).
    pub(super) fn store_hold(&mut self, now: Instant) -> Vec<Effect> {
        let Some(hold) = self.hold_opt.clone() else {
            return Vec::new();
        };
        self.state = State::Held {
            store_again_at: now + self.limits.retry_backoff,
        };
        vec![Effect::Hold {
            assignment_raw: self.held.raw.clone(),
            hold,
        }]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kmirror_common::schema::{encode, Assignment, Checkpoint, HoldReason};
    use kmirror_common::{Epoch, FlowName, MemberId, PartitionKey};
    use kmirror_proto::packed::{PackedBatch, PackedSummary};
    use kmirror_proto::v1::BatchAck;

    use super::*;
    use crate::budget::Reservation;
    use crate::partition::{Limits, Route};
    use crate::watcher::HeldAssignment;

    const RETRY_BACKOFF: Duration = Duration::from_secs(5);

    fn held(releasing: bool) -> HeldAssignment {
        let assignment = Assignment {
            fetcher: MemberId::new("fetcher-1").unwrap(),
            writer: MemberId::new("writer-1").unwrap(),
            epoch: Epoch(1),
            dest_topic: "orders".into(),
            dest_partitions: 1,
            source_partitions: 1,
            releasing_since_ms: releasing.then_some(9),
        };
        HeldAssignment {
            raw: encode(&assignment),
            assignment,
        }
    }

    /// Assigned at checkpoint 100, started, one batch of records 100..110 in flight.
    fn running_with_a_batch_in_flight(now: Instant) -> Partition {
        let checkpoint = Checkpoint {
            next_offset: 100,
            dest_partition: 0,
            dest_offset: 99,
            epoch: Epoch(1),
            updated_ms: 0,
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        };
        let limits = Limits {
            max_in_flight_batches: 8,
            retry_backoff: RETRY_BACKOFF,
        };
        let key = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
        let (mut partition, _) =
            Partition::assigned(key, held(false), Some(&checkpoint), limits, now);
        partition.start();
        let sent = partition.on_fetched(
            partition.generation,
            batch(),
            None,
            110,
            Reservation::none(),
            Route::Open,
            now,
        );
        assert_eq!(sent.len(), 1);
        partition
    }

    fn batch() -> PackedBatch {
        PackedBatch {
            record_count: 10,
            summary: PackedSummary {
                record_count: 10,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn hold_of(effects: &[Effect]) -> Option<&kmirror_common::schema::PartitionHold> {
        effects.iter().find_map(|effect| match effect {
            Effect::Hold { hold, .. } => Some(hold),
            _ => None,
        })
    }

    #[test]
    fn a_log_start_past_the_position_holds_the_partition_and_its_acks_still_count() {
        let now = Instant::now();
        let mut partition = running_with_a_batch_in_flight(now);
        let generation = partition.generation;
        let effects = partition.on_out_of_range(generation, 110, Some((150, 300)), now);
        assert!(matches!(effects[0], Effect::Unassign), "{effects:?}");
        let hold = hold_of(&effects).expect("a hold to store");
        assert_eq!(hold.reason, HoldReason::RetentionGap);
        assert_eq!(
            hold.message,
            "source log start 150 passed checkpoint 110: offsets 110..149 lost"
        );
        assert_eq!(hold.detected_by.as_str(), "fetcher-1");
        assert!(partition.is_held());
        assert!(partition.status().error.contains("110..149 lost"));

        // Nothing fetched under the old generation goes out any more.
        let late = partition.on_fetched(
            generation,
            batch(),
            None,
            120,
            Reservation::none(),
            Route::Open,
            now,
        );
        assert!(late.is_empty());
        // The batch sent before the refusal is acknowledged: the checkpoint
        // reaches the refused position, not beyond.
        partition.on_ack(
            BatchAck {
                source: Some(super::super::source_partition(partition.key())),
                epoch: 1,
                seq: 1,
                committed_offset: 110,
                dest_partition: 0,
                dest_offset: 109,
                error: None,
                trace_context: Default::default(),
            },
            now,
        );
        assert_eq!(partition.committed().next_offset, 110);
        assert!(partition.is_held());

        // Stored again after the backoff (a failed write is retried) until the
        // leader takes the partition back, which gives it back at 110.
        assert!(partition.on_tick(now + RETRY_BACKOFF / 2).is_empty());
        assert!(hold_of(&partition.on_tick(now + RETRY_BACKOFF)).is_some());
        let released = partition.on_assignment_changed(held(true), now);
        let checkpoint = released.iter().find_map(|effect| match effect {
            Effect::Release { checkpoint_opt, .. } => Some(*checkpoint_opt),
            _ => None,
        });
        assert_eq!(checkpoint.flatten().map(|c| c.next_offset), Some(110));
        assert!(partition.is_released());
    }

    #[test]
    fn a_position_past_the_source_end_holds_the_partition_as_recreated() {
        let now = Instant::now();
        let mut partition = running_with_a_batch_in_flight(now);
        let generation = partition.generation;
        let effects = partition.on_out_of_range(generation, 110, Some((0, 20)), now);
        let hold = hold_of(&effects).expect("a hold to store");
        assert_eq!(hold.reason, HoldReason::Recreated);
        assert_eq!(
            hold.message,
            "topic recreated: checkpoint 110, source end now 20"
        );
        assert!(partition.is_held());
    }

    #[test]
    fn a_refused_position_the_source_has_restarts_the_partition_instead() {
        let now = Instant::now();
        let mut partition = running_with_a_batch_in_flight(now);
        let generation = partition.generation;
        let effects = partition.on_out_of_range(generation, 110, Some((0, 500)), now);
        assert!(hold_of(&effects).is_none());
        assert!(!partition.is_held());
        let retried = partition.on_tick(now + DELIVERY_RETRY);
        assert!(matches!(retried[..], [Effect::Start]), "{retried:?}");
    }

    #[test]
    fn unreadable_source_offsets_are_reported_and_retried_not_held() {
        let now = Instant::now();
        let mut partition = running_with_a_batch_in_flight(now);
        let generation = partition.generation;
        let effects = partition.on_out_of_range(generation, 110, None, now);
        assert!(hold_of(&effects).is_none());
        assert!(effects
            .iter()
            .any(|effect| matches!(effect, Effect::ReportError { offset: 110, .. })));
        assert!(!partition.is_held());
    }

    #[test]
    fn a_refusal_from_before_a_restart_is_ignored() {
        let now = Instant::now();
        let mut partition = running_with_a_batch_in_flight(now);
        let stale = partition.generation - 1;
        assert!(partition
            .on_out_of_range(stale, 110, Some((150, 300)), now)
            .is_empty());
        assert!(!partition.is_held());
    }
}
