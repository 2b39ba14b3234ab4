//! The partition state machine's transitions, driven with explicit instants.

use kmirror_common::schema::{encode, Assignment};
use kmirror_common::{Epoch, FlowName};
use kmirror_proto::v1::WriteError;

use super::*;

const MAX_IN_FLIGHT: usize = 3;
const RETRY_BACKOFF: Duration = Duration::from_secs(5);

fn key() -> PartitionKey {
    PartitionKey::new(FlowName::new("orders-flow").unwrap(), "orders", 0)
}

fn assignment(epoch: u64, writer: &str) -> Assignment {
    Assignment {
        fetcher: MemberId::new("fetcher-1").unwrap(),
        writer: MemberId::new(writer).unwrap(),
        epoch: Epoch(epoch),
        dest_topic: "orders".into(),
        dest_partitions: 1,
        source_partitions: 1,
        releasing_since_ms: None,
    }
}

fn held(assignment: Assignment) -> HeldAssignment {
    HeldAssignment {
        raw: encode(&assignment),
        assignment,
    }
}

fn releasing(mut assignment: Assignment) -> HeldAssignment {
    assignment.releasing_since_ms = Some(1);
    held(assignment)
}

fn checkpoint_at(next_offset: i64) -> Checkpoint {
    Checkpoint {
        next_offset,
        dest_partition: 0,
        dest_offset: next_offset - 1,
        epoch: Epoch(1),
        updated_ms: 0,
        records_per_sec: 0.0,
        bytes_per_sec: 0.0,
    }
}

fn limits() -> Limits {
    Limits {
        max_in_flight_batches: MAX_IN_FLIGHT,
        retry_backoff: RETRY_BACKOFF,
    }
}

/// A partition assigned at checkpoint 100 and started, its writer's stream open.
fn running_at_100(now: Instant) -> Partition {
    let (mut partition, effects) = Partition::assigned(
        key(),
        held(assignment(1, "writer-1")),
        Some(&checkpoint_at(100)),
        limits(),
        now,
    );
    assert!(effects.is_empty());
    partition.start();
    partition
}

/// The consumer hands over a batch of 10 records ending before `next_offset`.
fn fetch(partition: &mut Partition, next_offset: i64, now: Instant) -> Vec<Effect> {
    fetch_routed(partition, None, next_offset, Route::Open, now)
}

/// [`fetch`], read from `read_from` and routed as the core sees it.
fn fetch_routed(
    partition: &mut Partition,
    read_from: Option<i64>,
    next_offset: i64,
    route: Route,
    now: Instant,
) -> Vec<Effect> {
    let packed = PackedBatch {
        record_count: 10,
        summary: PackedSummary {
            record_count: 10,
            key_value_bytes: 1_000,
            ..Default::default()
        },
        ..Default::default()
    };
    let generation = partition.generation;
    partition.on_fetched(
        generation,
        packed,
        read_from,
        next_offset,
        Reservation::none(),
        route,
        now,
    )
}

/// Once `due`, the halted partition starts again, from `offset`.
fn restarts_from(partition: &mut Partition, due: Instant, offset: i64) {
    assert!(matches!(partition.on_tick(due)[..], [Effect::Start]));
    let effects = partition.start();
    assert!(
        matches!(effects[..], [Effect::Assign { offset: Some(from), .. }] if from == offset),
        "{effects:?}"
    );
}

fn sent(effects: &[Effect]) -> Vec<(u64, bool, i64)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { batch, .. } => Some((batch.seq, batch.restart, batch.next_offset)),
            _ => None,
        })
        .collect()
}

fn ack(seq: u64, next_offset: i64) -> BatchAck {
    BatchAck {
        source: Some(source_partition(&key())),
        epoch: 1,
        seq,
        committed_offset: next_offset,
        dest_partition: 0,
        dest_offset: next_offset - 1,
        error: None,
        trace_context: Default::default(),
    }
}

/// An error ack: the batch's records before `committed_offset` were written.
fn failed(seq: u64, kind: ErrorKind, committed_offset: i64, record_offset: i64) -> BatchAck {
    BatchAck {
        committed_offset,
        dest_offset: committed_offset - 1,
        error: Some(WriteError {
            kind: kind.into(),
            message: format!("{kind:?}"),
            offset: record_offset,
            ..Default::default()
        }),
        ..ack(seq, committed_offset)
    }
}

fn is_release(effect: &Effect) -> Option<Option<i64>> {
    match effect {
        Effect::Release { checkpoint_opt, .. } => {
            Some(checkpoint_opt.map(|checkpoint| checkpoint.next_offset))
        }
        _ => None,
    }
}

#[test]
fn a_partition_starts_from_its_checkpoint_once_its_writers_stream_opens() {
    let now = Instant::now();
    let (mut partition, effects) = Partition::assigned(
        key(),
        held(assignment(1, "writer-1")),
        Some(&checkpoint_at(100)),
        limits(),
        now,
    );
    assert!(effects.is_empty());
    assert!(partition.is_waiting_for_link());
    assert!(matches!(partition.on_link_up()[..], [Effect::Start]));
    let effects = partition.start();
    assert!(matches!(
        effects[..],
        [Effect::Assign {
            offset: Some(100),
            generation: 1
        }]
    ));
    assert!(partition.is_running());
}

#[test]
fn a_partition_without_a_checkpoint_starts_from_the_beginning_and_checkpoints_nothing() {
    let now = Instant::now();
    let (mut partition, _) =
        Partition::assigned(key(), held(assignment(1, "writer-1")), None, limits(), now);
    assert!(matches!(
        partition.start()[..],
        [Effect::Assign { offset: None, .. }]
    ));
    assert!(partition.checkpoint_due(now, 0).is_none());
}

#[test]
fn only_the_first_batch_after_a_start_is_flagged_restart() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    assert_eq!(sent(&fetch(&mut partition, 110, now)), [(1, true, 110)]);
    assert_eq!(sent(&fetch(&mut partition, 120, now)), [(2, false, 120)]);
    partition.on_link_down();
    partition.start();
    assert_eq!(sent(&fetch(&mut partition, 110, now)), [(3, true, 110)]);
}

#[test]
fn batches_fetched_before_a_restart_are_dropped() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    let old_generation = partition.generation;
    partition.on_link_down();
    partition.start();
    let effects = partition.on_fetched(
        old_generation,
        PackedBatch::default(),
        None,
        110,
        Reservation::none(),
        Route::Open,
        now,
    );
    assert!(effects.is_empty());
    assert_eq!(partition.in_flight(), 0);
    partition.on_skipped(old_generation, 500);
    assert_eq!(partition.committed().next_offset, 100);
}

#[test]
fn acks_of_batches_sent_before_a_restart_are_dropped() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    assert!(matches!(partition.on_link_down()[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    partition.start();
    assert!(partition.on_ack(ack(1, 110), now).is_empty());
    assert!(partition.on_ack(ack(2, 120), now).is_empty());
    assert_eq!(partition.committed().next_offset, 100);
    assert_eq!(sent(&fetch(&mut partition, 110, now)), [(3, true, 110)]);
    partition.on_ack(ack(3, 110), now);
    assert_eq!(partition.committed().next_offset, 110);
}

#[test]
fn past_the_lease_deadline_a_batch_stops_the_partition_and_it_restarts_from_its_committed_position()
{
    let now = Instant::now();
    let mut partition = running_at_100(now);
    assert_eq!(sent(&fetch(&mut partition, 110, now)), vec![(1, true, 110)]);
    let lease_expired = fetch_routed(&mut partition, None, 120, Route::LeaseExpired, now);
    // Not sent, and the consumer moved past it: the partition stops fetching
    // and forgets what is in flight.
    assert!(matches!(lease_expired[..], [Effect::Unassign]));
    assert!(!partition.is_running());
    assert_eq!(partition.in_flight(), 0);
    // A batch the consumer fetched after the dropped one is not sent around it.
    assert!(fetch(&mut partition, 130, now).is_empty());
    assert!(partition.on_tick(now + RETRY_BACKOFF / 2).is_empty());
    restarts_from(&mut partition, now + RETRY_BACKOFF, 100);
}

#[test]
fn an_unreachable_writer_stops_the_partition() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    let unreachable = fetch_routed(&mut partition, None, 110, Route::WriterUnreachable, now);
    assert!(matches!(unreachable[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    assert_eq!(partition.in_flight(), 0);
}

#[test]
fn a_full_window_pauses_the_partition_once_and_acks_resume_it_below_the_limit() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    assert!(!matches!(
        fetch(&mut partition, 110, now)[..],
        [Effect::Pause, ..]
    ));
    assert!(!matches!(
        fetch(&mut partition, 120, now)[..],
        [Effect::Pause, ..]
    ));
    assert!(matches!(
        fetch(&mut partition, 130, now)[..],
        [Effect::Pause, Effect::Send { .. }]
    ));
    // A batch the consumer had already fetched when it paused.
    assert!(matches!(
        fetch(&mut partition, 140, now)[..],
        [Effect::Send { .. }]
    ));
    assert!(
        partition.on_ack(ack(1, 110), now).is_empty(),
        "3 still in flight"
    );
    assert!(matches!(
        partition.on_ack(ack(2, 120), now)[..],
        [Effect::Resume]
    ));
    assert!(partition.on_ack(ack(3, 130), now).is_empty());
    assert_eq!(partition.committed().next_offset, 130);
}

#[test]
fn a_stale_epoch_fences_the_partition_and_it_writes_nothing_more() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    partition.on_ack(ack(1, 110), now);
    let effects = partition.on_ack(failed(2, ErrorKind::StaleEpoch, 110, -1), now);
    assert!(matches!(effects[..], [Effect::Unassign]));
    assert!(partition.is_fenced());
    assert!(
        partition.checkpoint_due(now, 0).is_none(),
        "the position moved, yet a fenced partition writes no checkpoint"
    );
    assert!(fetch(&mut partition, 130, now).is_empty());
    assert!(partition.on_tick(now + RELEASE_GRACE * 2).is_empty());
    assert!(partition.start().is_empty());
    let released = partition.on_assignment_changed(releasing(assignment(1, "writer-1")), now);
    assert!(released.iter().all(|effect| is_release(effect).is_none()));
    assert!(partition.is_released());
}

#[test]
fn a_refused_checkpoint_fences_only_the_assignment_it_compared() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    let older = held(assignment(0, "writer-1"));
    assert!(partition.on_checkpoint_refused(&older.raw).is_empty());
    assert!(partition.is_running());
    let current = held(assignment(1, "writer-1"));
    assert!(matches!(
        partition.on_checkpoint_refused(&current.raw)[..],
        [Effect::Unassign]
    ));
    assert!(partition.is_fenced());
    // A new assignment lets it run again.
    let effects = partition.on_assignment_changed(held(assignment(2, "writer-1")), now);
    assert!(matches!(effects[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
}

#[test]
fn a_failed_delivery_is_retried_after_the_delivery_retry_from_the_committed_position() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    partition.on_ack(ack(1, 110), now);
    let effects = partition.on_ack(failed(2, ErrorKind::DeliveryFailed, 110, -1), now);
    assert!(matches!(
        effects[..],
        [Effect::ReportError { offset: 110, .. }, Effect::Unassign]
    ));
    assert!(partition.on_tick(now + DELIVERY_RETRY / 2).is_empty());
    assert!(matches!(
        partition.on_tick(now + DELIVERY_RETRY)[..],
        [Effect::Start]
    ));
    assert!(matches!(
        partition.start()[..],
        [Effect::Assign {
            offset: Some(110),
            ..
        }]
    ));
}

#[test]
fn a_partition_that_cannot_progress_is_retried_after_the_retry_backoff() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    let effects = partition.on_ack(failed(1, ErrorKind::DestinationMissing, 100, -1), now);
    assert!(matches!(
        effects[..],
        [Effect::ReportError { offset: 100, .. }, Effect::Unassign]
    ));
    assert!(partition.on_tick(now + DELIVERY_RETRY).is_empty());
    assert!(partition
        .on_tick(now + RETRY_BACKOFF - Duration::from_millis(1))
        .is_empty());
    assert!(matches!(
        partition.on_tick(now + RETRY_BACKOFF)[..],
        [Effect::Start]
    ));
}

#[test]
fn a_cut_short_ack_moves_the_committed_position_exactly_to_the_failed_record() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    fetch(&mut partition, 130, now);
    partition.on_ack(ack(1, 110), now);
    let effects = partition.on_ack(failed(2, ErrorKind::RecordTooLarge, 115, 115), now);
    assert!(matches!(
        effects[..],
        [Effect::ReportError { offset: 115, .. }, Effect::Unassign]
    ));
    let committed = partition.committed();
    assert_eq!((committed.next_offset, committed.dest_offset), (115, 114));
    assert_eq!(partition.in_flight(), 0);
    // Batch 3's own ack comes after the failure: it changes nothing.
    assert!(partition.on_ack(ack(3, 130), now).is_empty());
    assert_eq!(
        partition
            .checkpoint_due(now, 0)
            .map(|entry| entry.checkpoint.next_offset),
        Some(115)
    );
    partition.on_tick(now + RETRY_BACKOFF);
    assert!(matches!(
        partition.start()[..],
        [Effect::Assign {
            offset: Some(115),
            ..
        }]
    ));
}

#[test]
fn an_error_is_reported_once_and_cleared_by_the_next_success() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    partition.on_ack(failed(1, ErrorKind::RecordTooLarge, 100, 105), now);
    partition.on_tick(now + RETRY_BACKOFF);
    partition.start();
    fetch(&mut partition, 110, now);
    let again = partition.on_ack(failed(2, ErrorKind::RecordTooLarge, 100, 105), now);
    assert!(
        matches!(again[..], [Effect::Unassign]),
        "the same error is not reported twice: {again:?}"
    );
    assert_eq!(partition.status().error, "RecordTooLarge");
    let later = now + RETRY_BACKOFF * 2;
    partition.on_tick(later);
    partition.start();
    fetch(&mut partition, 110, later);
    assert!(matches!(
        partition.on_ack(ack(3, 110), later)[..],
        [Effect::ClearError]
    ));
    assert_eq!(partition.status().error, "");
}

#[test]
fn a_halted_ack_after_a_failure_changes_nothing() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    let effects = partition.on_ack(failed(2, ErrorKind::PartitionHalted, 110, -1), now);
    assert!(effects.is_empty());
    assert!(partition.is_running());
    assert_eq!(partition.in_flight(), 2);
}

#[test]
fn a_release_waits_for_the_acks_in_flight_then_writes_the_final_checkpoint() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    let effects = partition.on_assignment_changed(releasing(assignment(1, "writer-1")), now);
    assert!(matches!(effects[..], [Effect::Unassign]), "{effects:?}");
    assert!(
        fetch(&mut partition, 130, now).is_empty(),
        "nothing more is sent"
    );
    assert!(partition.on_ack(ack(1, 110), now).is_empty());
    let effects = partition.on_ack(ack(2, 120), now);
    assert_eq!(
        effects.iter().filter_map(is_release).collect::<Vec<_>>(),
        [Some(120)]
    );
    match &effects[..] {
        [Effect::Release { assignment_raw, .. }] => {
            assert_eq!(
                assignment_raw,
                &releasing(assignment(1, "writer-1")).raw,
                "the release compares the releasing assignment"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(partition.is_released());
}

#[test]
fn a_release_gives_up_on_missing_acks_at_its_deadline() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    fetch(&mut partition, 120, now);
    partition.on_ack(ack(1, 110), now);
    partition.on_assignment_changed(releasing(assignment(1, "writer-1")), now);
    assert!(partition
        .on_tick(now + RELEASE_GRACE - Duration::from_millis(1))
        .is_empty());
    let effects = partition.on_tick(now + RELEASE_GRACE);
    assert_eq!(
        effects.iter().filter_map(is_release).collect::<Vec<_>>(),
        [Some(110)],
        "the acknowledged prefix is checkpointed"
    );
    assert!(partition.is_released());
}

#[test]
fn a_partition_assigned_already_releasing_is_given_back_at_once_without_a_checkpoint() {
    let now = Instant::now();
    let (partition, effects) = Partition::assigned(
        key(),
        releasing(assignment(1, "writer-1")),
        Some(&checkpoint_at(100)),
        limits(),
        now,
    );
    assert_eq!(
        effects.iter().filter_map(is_release).collect::<Vec<_>>(),
        [None],
        "the checkpoint did not move: only the assignment is deleted"
    );
    assert!(partition.is_released());
}

#[test]
fn a_releasing_partition_assigned_again_restarts() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    partition.on_assignment_changed(releasing(assignment(1, "writer-1")), now);
    let effects = partition.on_assignment_changed(held(assignment(2, "writer-1")), now);
    assert!(matches!(effects[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    assert_eq!(partition.in_flight(), 0);
}

#[test]
fn a_new_writer_restarts_the_partition_and_a_new_epoch_alone_does_not() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    assert!(partition
        .on_assignment_changed(held(assignment(2, "writer-1")), now)
        .is_empty());
    assert!(partition.is_running());
    assert_eq!(partition.in_flight(), 1);
    let effects = partition.on_assignment_changed(held(assignment(3, "writer-2")), now);
    assert!(matches!(effects[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    assert_eq!(partition.writer().as_str(), "writer-2");
    assert_eq!(partition.in_flight(), 0);
}

#[test]
fn unassigning_a_partition_clears_its_reported_error() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    partition.on_ack(failed(1, ErrorKind::DestinationMissing, 100, -1), now);
    let effects = partition.on_unassigned();
    assert!(matches!(
        effects[..],
        [Effect::Unassign, Effect::ClearError]
    ));
    assert!(partition.is_released());
}

#[test]
fn a_closed_stream_drops_what_was_in_flight_and_a_broken_one_spares_halted_partitions() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    assert!(matches!(partition.on_link_closed()[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    assert_eq!(partition.in_flight(), 0);

    let mut halted = running_at_100(now);
    fetch(&mut halted, 110, now);
    halted.on_ack(failed(1, ErrorKind::DeliveryFailed, 100, -1), now);
    assert!(halted.on_link_down().is_empty());
    assert!(matches!(
        halted.on_tick(now + DELIVERY_RETRY)[..],
        [Effect::Start]
    ));
}

#[test]
fn an_unknown_source_halts_the_partition_until_the_retry_backoff() {
    let now = Instant::now();
    let (mut partition, _) =
        Partition::assigned(key(), held(assignment(1, "writer-1")), None, limits(), now);
    assert!(partition.source_unavailable(None, now).is_empty());
    assert!(partition.on_tick(now + RETRY_BACKOFF / 2).is_empty());
    assert!(matches!(
        partition.on_tick(now + RETRY_BACKOFF)[..],
        [Effect::Start]
    ));
    let effects = partition.source_unavailable(Some("no broker".into()), now);
    assert!(matches!(
        effects[..],
        [Effect::ReportError { offset: -1, .. }]
    ));
}

#[test]
fn a_partition_its_source_refused_stops_and_starts_again_after_the_pause() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    let pause = Duration::from_secs(8);
    let effects = partition.source_refused(Some("refused (authentication)".into()), pause, now);
    assert!(matches!(
        effects[..],
        [Effect::Unassign, Effect::ReportError { offset: -1, .. }]
    ));
    assert!(
        partition.on_tick(now + RETRY_BACKOFF).is_empty(),
        "the pause, not the retry backoff"
    );
    assert!(matches!(
        partition.on_tick(now + pause)[..],
        [Effect::Start]
    ));
    // A start the pause forbids halts it without a second report.
    let effects = partition.source_refused(None, pause, now + pause);
    assert!(!effects
        .iter()
        .any(|effect| matches!(effect, Effect::ReportError { .. })));
    assert_eq!(partition.committed().next_offset, 100);
}

#[test]
fn a_rate_that_falls_to_zero_is_checkpointed_though_the_position_did_not_move() {
    let start = Instant::now();
    let mut partition = running_at_100(start);
    partition.on_tick(start);
    let mut next_offset = 100;
    for second in 1..=3 {
        let now = start + Duration::from_secs(second);
        next_offset += 10;
        fetch(&mut partition, next_offset, now);
        partition.on_ack(ack(second, next_offset), now);
        partition.on_tick(now);
    }
    let busy = start + Duration::from_secs(3);
    let entry = partition.checkpoint_due(busy, 0).expect("position moved");
    assert!(entry.checkpoint.records_per_sec > 0.0);
    partition.on_checkpoint_written(&entry.checkpoint, busy);
    assert!(partition.checkpoint_due(busy, 0).is_none());

    // Idle: the decaying rate is not worth a write until it reaches 0.
    let decaying = busy + Duration::from_secs(2);
    partition.on_tick(decaying);
    assert!(partition.checkpoint_due(decaying, 0).is_none());
    let idle = busy + rate::IDLE_AFTER;
    partition.on_tick(idle);
    let entry = partition.checkpoint_due(idle, 0).expect("rate fell to 0");
    assert_eq!(entry.checkpoint.next_offset, 130);
    assert_eq!(entry.checkpoint.records_per_sec, 0.0);
    partition.on_checkpoint_written(&entry.checkpoint, idle);
    partition.on_tick(idle + Duration::from_secs(60));
    assert!(partition
        .checkpoint_due(idle + Duration::from_secs(60), 0)
        .is_none());
}

#[test]
fn offsets_skipped_after_a_batch_commit_once_that_batch_is_acked() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    let generation = partition.generation;
    // Transaction markers at 110 and 111.
    partition.on_skipped(generation, 112);
    assert_eq!(partition.committed().next_offset, 100);
    partition.on_ack(ack(1, 110), now);
    assert_eq!(partition.committed().next_offset, 112);
    assert_eq!(
        partition
            .checkpoint_due(now, 0)
            .map(|entry| entry.checkpoint.next_offset),
        Some(112)
    );
}

#[test]
fn a_written_checkpoint_is_not_written_again_until_the_position_moves() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    assert!(partition.checkpoint_due(now, 0).is_none(), "still at 100");
    fetch(&mut partition, 110, now);
    partition.on_ack(ack(1, 110), now);
    let entry = partition.checkpoint_due(now, 7).expect("moved to 110");
    assert_eq!(entry.assignment_raw, held(assignment(1, "writer-1")).raw);
    assert_eq!(
        (entry.checkpoint.epoch, entry.checkpoint.updated_ms),
        (Epoch(1), 7)
    );
    partition.on_checkpoint_written(&entry.checkpoint, now);
    assert!(partition.checkpoint_due(now, 0).is_none());
}

#[test]
fn a_flow_whose_source_changed_restarts_its_partitions_under_the_new_consumer() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    fetch(&mut partition, 110, now);
    partition.on_source_changed();
    assert!(matches!(partition.stop()[..], [Effect::Unassign]));
    assert!(partition.is_waiting_for_link());
    assert_eq!(partition.in_flight(), 0);
    assert!(matches!(
        partition.start()[..],
        [Effect::Assign {
            offset: Some(100),
            generation: 3
        }]
    ));
}

#[test]
fn a_batch_that_does_not_follow_the_last_one_sent_restarts_the_partition() {
    let now = Instant::now();
    let mut partition = running_at_100(now);
    let generation = partition.generation;
    let fetched = |partition: &mut Partition, read_from: i64, next_offset: i64| {
        fetch_routed(partition, Some(read_from), next_offset, Route::Open, now)
    };
    assert_eq!(
        sent(&fetched(&mut partition, 100, 110)),
        vec![(1, true, 110)]
    );
    partition.on_skipped(generation, 115);
    assert_eq!(
        sent(&fetched(&mut partition, 115, 120)),
        vec![(2, false, 120)]
    );
    // Offsets 120..130 never reached the partition.
    assert!(matches!(
        fetched(&mut partition, 130, 140)[..],
        [Effect::Unassign]
    ));
    assert!(!partition.is_running());
    assert_eq!(partition.in_flight(), 0);
    restarts_from(&mut partition, now + DELIVERY_RETRY, 100);
}
