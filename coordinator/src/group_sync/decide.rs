//! What a group sync does with one group: pure, from what was read.
//!
//! A destination group with active members is never touched (its consumers
//! own their positions; committing under them would move a live group). Each
//! partition the source group committed on is then committed at its
//! translated position, unless it is already there, cannot be translated, or
//! would move the destination group backwards (only when allowed).

use std::collections::BTreeMap;

use kmirror_proto::v1::{GroupPartitionSync, GroupSyncResult, OffsetTranslation};

/// What the destination knows of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestGroup {
    /// The group's state as the destination's coordinator tells it ("Empty",
    /// "Stable", "Dead" when unknown there, ...).
    pub state: String,
    pub members: usize,
    /// Committed offsets by (destination topic, partition).
    pub committed: BTreeMap<(String, i32), i64>,
}

impl DestGroup {
    /// Whether consumers use the group now: any member, or a rebalance under way.
    pub fn is_live(&self) -> bool {
        self.members > 0 || !matches!(self.state.as_str(), "Empty" | "Dead" | "")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    pub dry_run: bool,
    pub allow_backwards: bool,
}

pub const COMMITTED: &str = "committed";
pub const WOULD_COMMIT: &str = "would_commit";
pub const UNCHANGED: &str = "unchanged";
pub const BEHIND: &str = "behind";
pub const NOT_TRANSLATED: &str = "not_translated";

pub const SYNCED: &str = "synced";
pub const PARTIAL: &str = "partial";
pub const LIVE: &str = "live";
pub const FAILED: &str = "failed";

/// The group's sync: every partition's action, and the state that sums it up.
/// Partitions whose action is [`COMMITTED`] are those to commit (the caller
/// turns them into [`FAILED`] if the commit is refused).
pub fn decide_group(
    group: &str,
    translations: &[OffsetTranslation],
    dest: &DestGroup,
    options: SyncOptions,
) -> GroupSyncResult {
    if dest.is_live() {
        return GroupSyncResult {
            group: group.to_string(),
            state: LIVE.to_string(),
            reason: format!(
                "the destination group is in use ({} active member{}, state {}): a live group is never moved",
                dest.members,
                if dest.members == 1 { "" } else { "s" },
                dest.state
            ),
            partitions: Vec::new(),
        };
    }
    let partitions: Vec<GroupPartitionSync> = translations
        .iter()
        .map(|translation| decide_partition(translation, dest, options))
        .collect();
    GroupSyncResult {
        group: group.to_string(),
        state: summary_state(&partitions).to_string(),
        reason: String::new(),
        partitions,
    }
}

fn decide_partition(
    translation: &OffsetTranslation,
    dest: &DestGroup,
    options: SyncOptions,
) -> GroupPartitionSync {
    let previous_opt = dest
        .committed
        .get(&(translation.dest_topic.clone(), translation.dest_partition))
        .copied();
    let mut sync = GroupPartitionSync {
        topic: translation.topic.clone(),
        partition: translation.partition,
        source_offset: translation.source_offset,
        dest_topic: translation.dest_topic.clone(),
        dest_partition: translation.dest_partition,
        dest_offset: if translation.translated {
            translation.dest_offset
        } else {
            -1
        },
        previous_dest_offset: previous_opt.unwrap_or(-1),
        action: String::new(),
        reason: String::new(),
    };
    let (action, reason) = if !translation.translated {
        (NOT_TRANSLATED, translation.reason.clone())
    } else {
        match previous_opt {
            Some(previous) if previous == translation.dest_offset => (UNCHANGED, String::new()),
            Some(previous) if previous > translation.dest_offset && !options.allow_backwards => (
                BEHIND,
                format!(
                    "the destination group is at {previous}, past the translated {}: not moved backwards",
                    translation.dest_offset
                ),
            ),
            _ if options.dry_run => (WOULD_COMMIT, String::new()),
            _ => (COMMITTED, String::new()),
        }
    };
    sync.action = action.to_string();
    sync.reason = reason;
    sync
}

/// `synced` when every partition is (or, in a dry run, would be) at its
/// translated position, `partial` otherwise.
pub fn summary_state(partitions: &[GroupPartitionSync]) -> &'static str {
    if partitions
        .iter()
        .all(|sync| matches!(sync.action.as_str(), COMMITTED | WOULD_COMMIT | UNCHANGED))
    {
        SYNCED
    } else {
        PARTIAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(partition: i32, source_offset: i64, dest_offset: i64) -> OffsetTranslation {
        OffsetTranslation {
            topic: "orders".into(),
            partition,
            source_offset,
            translated: true,
            dest_topic: "east.orders".into(),
            dest_partition: partition,
            dest_offset,
            reason: String::new(),
        }
    }

    fn empty_with(committed: &[(i32, i64)]) -> DestGroup {
        DestGroup {
            state: "Empty".into(),
            members: 0,
            committed: committed
                .iter()
                .map(|&(partition, offset)| (("east.orders".to_string(), partition), offset))
                .collect(),
        }
    }

    const COMMIT: SyncOptions = SyncOptions {
        dry_run: false,
        allow_backwards: false,
    };

    fn actions(result: &GroupSyncResult) -> Vec<&str> {
        result
            .partitions
            .iter()
            .map(|sync| sync.action.as_str())
            .collect()
    }

    #[test]
    fn a_live_destination_group_is_never_moved() {
        for dest in [
            DestGroup {
                state: "Stable".into(),
                members: 2,
                ..DestGroup::default()
            },
            // A rebalance under way: members may be joining.
            DestGroup {
                state: "PreparingRebalance".into(),
                members: 0,
                ..DestGroup::default()
            },
        ] {
            let result = decide_group("billing", &[translated(0, 50, 40)], &dest, COMMIT);
            assert_eq!(result.state, LIVE);
            assert!(result.partitions.is_empty());
            assert!(result.reason.contains("never moved"), "{}", result.reason);
        }
    }

    #[test]
    fn partitions_move_forward_only_unless_allowed() {
        let translations = [
            translated(0, 50, 40),
            translated(1, 60, 55),
            translated(2, 70, 65),
            translated(3, 80, 75),
        ];
        // No commit yet on 0; equal on 1; ahead (would go backwards) on 2; behind on 3.
        let dest = empty_with(&[(1, 55), (2, 90), (3, 10)]);
        let result = decide_group("billing", &translations, &dest, COMMIT);
        assert_eq!(actions(&result), [COMMITTED, UNCHANGED, BEHIND, COMMITTED]);
        assert_eq!(result.state, PARTIAL);
        assert_eq!(result.partitions[2].previous_dest_offset, 90);
        assert!(result.partitions[2].reason.contains("not moved backwards"));

        let allowed = SyncOptions {
            allow_backwards: true,
            ..COMMIT
        };
        let result = decide_group("billing", &translations, &dest, allowed);
        assert_eq!(
            actions(&result),
            [COMMITTED, UNCHANGED, COMMITTED, COMMITTED]
        );
        assert_eq!(result.state, SYNCED);
    }

    #[test]
    fn an_untranslated_partition_is_reported_not_guessed() {
        let mut pending = translated(1, 900, -1);
        pending.translated = false;
        pending.reason = "not mirrored yet: the last mirrored source offset is 850".into();
        let result = decide_group(
            "billing",
            &[translated(0, 50, 40), pending],
            &empty_with(&[]),
            COMMIT,
        );
        assert_eq!(actions(&result), [COMMITTED, NOT_TRANSLATED]);
        assert_eq!(result.partitions[1].dest_offset, -1);
        assert!(result.partitions[1].reason.contains("not mirrored yet"));
        assert_eq!(result.state, PARTIAL);
    }

    #[test]
    fn a_dry_run_says_what_it_would_commit() {
        let dry = SyncOptions {
            dry_run: true,
            ..COMMIT
        };
        let result = decide_group(
            "billing",
            &[translated(0, 50, 40), translated(1, 60, 55)],
            &empty_with(&[(1, 55)]),
            dry,
        );
        assert_eq!(actions(&result), [WOULD_COMMIT, UNCHANGED]);
        assert_eq!(result.state, SYNCED);
    }
}
