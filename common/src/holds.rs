//! Offset surprises: whether a source partition can still be read from the
//! position kmirror was to read it from, decided from the source's log start and
//! end offsets. Pure; the fetcher asks it when the source refuses a position
//! (librdkafka's offset-out-of-range, with `auto.offset.reset=error`), and what
//! it answers is stored as a [`PartitionHold`] under `holds/`.
//!
//! | position against the source | verdict | the operator reads |
//! | --- | --- | --- |
//! | `log_start <= position <= log_end` | readable | (nothing: a position at the end is a tailing partition) |
//! | `position < log_start` | retention gap: `position..log_start-1` lost | `source log start 5000 passed checkpoint 3200: offsets 3200..4999 lost` |
//! | `position > log_end` | recreated (or truncated) | `topic recreated: checkpoint 900, source end now 120` |
//!
//! A topic deleted and created again that already holds more records than the
//! position cannot be told apart by offsets: it reads as readable.

use crate::schema::{HoldReason, PartitionHold};
use crate::MemberId;

/// What the source's offsets say about a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionCheck {
    /// The source still has the position.
    Readable,
    /// Records `lost_from..=lost_to` were removed before they were mirrored.
    RetentionGap { lost_from: i64, lost_to: i64 },
    /// The position is past the source's end.
    Recreated { position: i64, log_end: i64 },
}

/// Checks `position` (the next source offset to read) against the source's
/// log start and end offsets.
pub fn check_position(position: i64, log_start: i64, log_end: i64) -> PositionCheck {
    if position < log_start {
        PositionCheck::RetentionGap {
            lost_from: position,
            lost_to: log_start - 1,
        }
    } else if position > log_end {
        PositionCheck::Recreated { position, log_end }
    } else {
        PositionCheck::Readable
    }
}

impl PositionCheck {
    /// The hold to store for an unreadable position; `None` when readable.
    pub fn hold(
        self,
        position: i64,
        log_start: i64,
        log_end: i64,
        detected_by: MemberId,
        detected_ms: i64,
    ) -> Option<PartitionHold> {
        let (reason, message) = match self {
            PositionCheck::Readable => return None,
            PositionCheck::RetentionGap { lost_from, lost_to } => (
                HoldReason::RetentionGap,
                format!(
                    "source log start {log_start} passed checkpoint {lost_from}: offsets {lost_from}..{lost_to} lost"
                ),
            ),
            PositionCheck::Recreated { position, log_end } => (
                HoldReason::Recreated,
                format!("topic recreated: checkpoint {position}, source end now {log_end}"),
            ),
        };
        Some(PartitionHold {
            reason,
            position,
            log_start,
            log_end,
            message,
            detected_ms,
            detected_by,
        })
    }
}

impl PartitionHold {
    /// The source offsets lost, inclusive: those between the position and the
    /// log start for a retention gap; `None` for a recreated topic (the old
    /// topic's records past the position are gone, how many is not known).
    pub fn lost_range(&self) -> Option<(i64, i64)> {
        match self.reason {
            HoldReason::RetentionGap => Some((self.position, self.log_start - 1)),
            HoldReason::Recreated => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_within_the_source_log_or_at_its_end_is_readable() {
        assert_eq!(check_position(3_200, 0, 9_000), PositionCheck::Readable);
        assert_eq!(check_position(5_000, 5_000, 9_000), PositionCheck::Readable);
        assert_eq!(check_position(9_000, 5_000, 9_000), PositionCheck::Readable);
        // An empty partition whose records all expired, read from its end.
        assert_eq!(check_position(700, 700, 700), PositionCheck::Readable);
    }

    #[test]
    fn a_log_start_past_the_position_is_a_gap_naming_the_offsets_lost() {
        let check = check_position(3_200, 5_000, 9_000);
        assert_eq!(
            check,
            PositionCheck::RetentionGap {
                lost_from: 3_200,
                lost_to: 4_999
            }
        );
        let hold = check
            .hold(3_200, 5_000, 9_000, MemberId::new("f1").unwrap(), 7)
            .unwrap();
        assert_eq!(hold.reason, HoldReason::RetentionGap);
        assert_eq!(
            hold.message,
            "source log start 5000 passed checkpoint 3200: offsets 3200..4999 lost"
        );
        assert_eq!(hold.lost_range(), Some((3_200, 4_999)));
        // Everything retained expired too: the gap still ends before the log start.
        assert_eq!(
            check_position(10, 20, 20),
            PositionCheck::RetentionGap {
                lost_from: 10,
                lost_to: 19
            }
        );
    }

    #[test]
    fn a_position_past_the_source_end_is_a_recreated_topic() {
        let check = check_position(900, 0, 120);
        assert_eq!(
            check,
            PositionCheck::Recreated {
                position: 900,
                log_end: 120
            }
        );
        let hold = check
            .hold(900, 0, 120, MemberId::new("f1").unwrap(), 7)
            .unwrap();
        assert_eq!(hold.reason, HoldReason::Recreated);
        assert_eq!(
            hold.message,
            "topic recreated: checkpoint 900, source end now 120"
        );
        assert_eq!(hold.lost_range(), None);
        // Recreated and still empty.
        assert_eq!(
            check_position(1, 0, 0),
            PositionCheck::Recreated {
                position: 1,
                log_end: 0
            }
        );
    }

    #[test]
    fn a_readable_position_makes_no_hold() {
        assert!(PositionCheck::Readable
            .hold(1, 0, 5, MemberId::new("f1").unwrap(), 0)
            .is_none());
    }
}
