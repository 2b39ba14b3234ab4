//! The in-flight window of one partition: batches sent and not yet acknowledged,
//! in send order.
//!
//! The committed position only ever advances over the contiguous prefix of
//! acknowledged batches: a later batch acknowledged before an earlier one moves
//! nothing until the earlier one is acknowledged too.

use std::collections::VecDeque;

use crate::budget::Reservation;

/// Where the contiguous acknowledged prefix ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Next source offset to read: everything before it is in the destination.
    pub next_offset: i64,
    /// Destination partition and offset of the last record before `next_offset`
    /// (-1 when unknown).
    pub dest_partition: i32,
    pub dest_offset: i64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    next_offset: i64,
    /// Destination position when acknowledged; `None` while in flight.
    acked: Option<(i32, i64)>,
    /// The batch's share of the in-flight budget, released once acknowledged.
    reservation: Reservation,
}

#[derive(Debug)]
pub struct Window {
    entries: VecDeque<Entry>,
    committed: Committed,
}

impl Window {
    pub fn new(committed: Committed) -> Self {
        Self {
            entries: VecDeque::new(),
            committed,
        }
    }

    /// Batches sent and not yet part of the committed prefix.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn committed(&self) -> Committed {
        self.committed
    }

    /// The offset after the last batch sent (or committed).
    pub fn sent_up_to(&self) -> i64 {
        self.entries
            .back()
            .map_or(self.committed.next_offset, |entry| entry.next_offset)
    }

    pub fn push(&mut self, seq: u64, next_offset: i64, reservation: Reservation) {
        self.entries.push_back(Entry {
            seq,
            next_offset,
            acked: None,
            reservation,
        });
    }

    /// Moves the position past offsets that hold no record to mirror (transaction
    /// markers, aborted records), once everything before them is acknowledged.
    pub fn skip_to(&mut self, next_offset: i64) {
        if next_offset <= self.sent_up_to() {
            return;
        }
        let (dest_partition, dest_offset) = (-1, -1);
        match self.entries.back() {
            None => self.committed.next_offset = next_offset,
            Some(_) => self.entries.push_back(Entry {
                seq: u64::MAX,
                next_offset,
                acked: Some((dest_partition, dest_offset)),
                reservation: Reservation::none(),
            }),
        }
    }

    /// Records a successful ack. Returns whether the committed position moved.
    pub fn ack(&mut self, seq: u64, dest_partition: i32, dest_offset: i64) -> bool {
        let Some(entry) = self.entries.iter_mut().find(|entry| entry.seq == seq) else {
            return false;
        };
        entry.acked = Some((dest_partition, dest_offset));
        // The writer holds nothing of an acknowledged batch any more.
        entry.reservation = Reservation::none();
        self.pop_acked_prefix()
    }

    /// Records a failed batch that still wrote a prefix of its records: the
    /// position moves to `committed_offset` only if every earlier batch is
    /// acknowledged. Everything in flight is then dropped (the partition restarts
    /// from the committed position).
    pub fn fail(&mut self, seq: u64, committed_offset: i64, dest_partition: i32, dest_offset: i64) {
        if committed_offset >= 0
            && self.entries.front().is_some_and(|entry| entry.seq == seq)
            && committed_offset > self.committed.next_offset
        {
            self.committed.next_offset = committed_offset;
            if dest_offset >= 0 {
                self.committed.dest_partition = dest_partition;
                self.committed.dest_offset = dest_offset;
            }
        }
        self.entries.clear();
    }

    /// Drops everything in flight; the committed position stays.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.entries.iter().any(|entry| entry.seq == seq)
    }

    fn pop_acked_prefix(&mut self) -> bool {
        let mut moved = false;
        while let Some(Some((dest_partition, dest_offset))) =
            self.entries.front().map(|entry| entry.acked)
        {
            let entry = self.entries.pop_front().expect("front exists");
            self.committed.next_offset = entry.next_offset;
            if dest_offset >= 0 {
                self.committed.dest_partition = dest_partition;
                self.committed.dest_offset = dest_offset;
            }
            moved = true;
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_at(offset: i64) -> Window {
        Window::new(Committed {
            next_offset: offset,
            dest_partition: -1,
            dest_offset: -1,
        })
    }

    #[test]
    fn a_later_ack_moves_nothing_until_the_earlier_one_arrives() {
        let mut window = window_at(0);
        window.push(1, 10, Reservation::none());
        window.push(2, 20, Reservation::none());
        window.push(3, 30, Reservation::none());
        assert!(!window.ack(2, 0, 19));
        assert_eq!(window.committed().next_offset, 0);
        assert!(window.ack(1, 0, 9));
        assert_eq!(window.committed().next_offset, 20);
        assert_eq!(window.committed().dest_offset, 19);
        assert_eq!(window.len(), 1);
        assert!(window.ack(3, 0, 29));
        assert_eq!(window.committed().next_offset, 30);
        assert!(window.is_empty());
    }

    #[test]
    fn unknown_or_repeated_acks_are_ignored() {
        let mut window = window_at(5);
        window.push(1, 10, Reservation::none());
        assert!(!window.ack(7, 0, 1));
        assert!(window.ack(1, 0, 9));
        assert!(!window.ack(1, 0, 9));
        assert_eq!(window.committed().next_offset, 10);
    }

    #[test]
    fn a_partial_failure_counts_only_when_everything_before_it_is_acked() {
        let mut window = window_at(0);
        window.push(1, 10, Reservation::none());
        window.push(2, 20, Reservation::none());
        window.fail(2, 15, 0, 14);
        assert_eq!(window.committed().next_offset, 0, "batch 1 is not acked");
        assert!(window.is_empty());

        let mut window = window_at(0);
        window.push(1, 10, Reservation::none());
        window.push(2, 20, Reservation::none());
        window.ack(1, 0, 9);
        window.fail(2, 15, 0, 14);
        assert_eq!(window.committed().next_offset, 15);
        assert_eq!(window.committed().dest_offset, 14);
    }

    #[test]
    fn skipped_offsets_commit_once_the_batches_before_them_are_acked() {
        let mut window = window_at(0);
        window.skip_to(3);
        assert_eq!(window.committed().next_offset, 3);
        window.push(1, 10, Reservation::none());
        window.skip_to(12);
        assert_eq!(window.committed().next_offset, 3);
        window.ack(1, 0, 6);
        assert_eq!(window.committed().next_offset, 12);
        assert_eq!(window.committed().dest_offset, 6);
        window.skip_to(11);
        assert_eq!(window.committed().next_offset, 12, "never moves back");
    }
}
