use super::*;
use crate::round::test_support::configs;

fn entry(offsets: &[i64], dest_first_offset: i64) -> MapEntry {
    MapEntry::from_offsets(offsets, "orders", 0, dest_first_offset, true).unwrap()
}

fn range(first: i64, last: i64) -> OffsetRange {
    OffsetRange { first, last }
}

fn marks(low: i64, high: i64) -> Watermarks {
    Watermarks { low, high }
}

fn segment(source_first: i64, dest_first: i64, len: u64) -> Segment {
    Segment {
        source_first,
        dest_first,
        len,
    }
}

#[test]
fn a_healthy_partition_has_no_finding_and_counts_every_record_once() {
    // Offsets 3 and 4 are a commit marker and an aborted record.
    let entries = [entry(&[0, 1, 2], 0), entry(&[5, 6, 7], 3)];
    let copies = partition_copies(&entries, "orders", 0);
    assert_eq!(copies.latest, vec![segment(0, 0, 3), segment(5, 3, 3)]);
    let check = check_partition(&copies, marks(0, 9), marks(0, 6));
    assert!(
        check.missing.is_empty() && check.findings.is_empty(),
        "{check:?}"
    );
    assert_eq!(
        check.counts,
        PartitionCounts {
            mirrored_records: 6,
            first_source_offset_opt: Some(0),
            last_source_offset_opt: Some(7),
            dest_held_records: 6,
            source_expired_records: 0,
        }
    );
}

#[test]
fn a_resent_batch_is_judged_at_its_latest_copy() {
    // 10..=12 written at 0..=2, then resent from 11 at 3..=5 after a failure.
    let entries = [entry(&[10, 11, 12], 0), entry(&[11, 12, 13], 3)];
    let copies = partition_copies(&entries, "orders", 0);
    assert_eq!(copies.latest, vec![segment(10, 0, 1), segment(11, 3, 3)]);
    assert!(copies.rewritten.is_empty());
    // Each record counts once, at its latest copy.
    let check = check_partition(&copies, marks(0, 14), marks(0, 6));
    assert_eq!(check.counts.mirrored_records, 4);
    assert_eq!(check.counts.dest_held_records, 4);
    assert!(check.missing.is_empty());
}

#[test]
fn a_deleted_record_is_missing_with_both_offsets() {
    let copies = partition_copies(&[entry(&[0, 1, 2, 3], 0)], "orders", 0);
    // kafka-delete-records before destination offset 1.
    let check = check_partition(&copies, marks(0, 4), marks(1, 4));
    assert_eq!(
        check.missing,
        vec![MissingRun {
            dest: range(0, 0),
            source: range(0, 0),
            records: 1
        }]
    );
    assert_eq!(check.counts.dest_held_records, 3);
    let finding = missing_finding(
        check.missing[0],
        marks(1, 4),
        None,
        DestRetention {
            retention_ms_opt: None,
        },
        0,
    );
    assert_eq!(
        finding.to_string(),
        "1 mirrored record(s) at destination offset 0 are gone (the destination partition holds offsets 1..=3), while the source still holds them at offset 0"
    );
}

#[test]
fn a_partition_emptied_or_created_again_misses_every_record_in_one_run() {
    let entries = [entry(&[0, 1, 2], 0), entry(&[4, 5], 3)];
    let copies = partition_copies(&entries, "orders", 0);
    // Every record deleted: the log starts at its end.
    let emptied = check_partition(&copies, marks(0, 6), marks(5, 5));
    assert_eq!(
        emptied.missing,
        vec![MissingRun {
            dest: range(0, 4),
            source: range(0, 5),
            records: 5
        }]
    );
    // Deleted and created again: an empty partition from offset 0.
    let created_again = check_partition(&copies, marks(0, 6), marks(0, 0));
    assert_eq!(created_again.missing, emptied.missing);
    let finding = missing_finding(
        emptied.missing[0],
        marks(5, 5),
        Some(1_000),
        DestRetention {
            retention_ms_opt: None,
        },
        2_000,
    );
    assert!(finding.is_drift());
    assert_eq!(
        finding.to_string(),
        "5 mirrored record(s) at destination offsets 0..=4 are gone (the destination partition is empty at offset 5), while the source still holds them at offsets 0..=5"
    );
}

#[test]
fn records_the_source_deleted_too_are_retention_not_drift() {
    let copies = partition_copies(&[entry(&[0, 1, 2, 3], 10)], "orders", 0);
    // Both sides deleted the first two records.
    let check = check_partition(&copies, marks(2, 4), marks(12, 14));
    assert!(check.missing.is_empty());
    assert_eq!(check.counts.source_expired_records, 2);
    // The destination deleted one more than the source.
    let check = check_partition(&copies, marks(2, 4), marks(13, 14));
    assert_eq!(
        check.missing,
        vec![MissingRun {
            dest: range(12, 12),
            source: range(2, 2),
            records: 1
        }]
    );
}

#[test]
fn a_gap_the_destinations_retention_explains_is_a_note() {
    let run = MissingRun {
        dest: range(0, 9),
        source: range(0, 9),
        records: 10,
    };
    let day = 86_400_000;
    let retention = DestRetention::from_configs(&configs(&[
        ("cleanup.policy", "delete"),
        ("retention.ms", "86400000"),
    ]));
    let now = 10 * day;
    let old = missing_finding(run, marks(10, 20), Some(now - 2 * day), retention, now);
    assert!(matches!(old, Finding::RetentionExpired { .. }) && !old.is_drift());
    let recent = missing_finding(run, marks(10, 20), Some(now - 1_000), retention, now);
    assert!(matches!(recent, Finding::RecordsMissing { .. }) && recent.is_drift());
    // Compacted only, or kept forever: retention deletes nothing.
    for kept in [
        configs(&[("cleanup.policy", "compact"), ("retention.ms", "1")]),
        configs(&[("cleanup.policy", "delete"), ("retention.ms", "-1")]),
    ] {
        let finding = missing_finding(
            run,
            marks(10, 20),
            Some(0),
            DestRetention::from_configs(&kept),
            now,
        );
        assert!(finding.is_drift(), "{kept:?}");
    }
}

#[test]
fn a_source_behind_the_map_is_drift() {
    let copies = partition_copies(&[entry(&[0, 1, 2, 3, 4], 0)], "orders", 0);
    let check = check_partition(&copies, marks(0, 2), marks(0, 5));
    assert_eq!(
        check.findings,
        vec![Finding::SourceBehindMap {
            last_mirrored: 4,
            source_log_end: 2,
            records: 3
        }]
    );
    assert!(check.missing.is_empty());
}

#[test]
fn destination_offsets_written_twice_show_a_partition_created_again() {
    // Mirrored 0..=4 at 0..=4; the topic deleted, created again and written from
    // source 5 on at 0.
    let entries = [entry(&[0, 1, 2, 3, 4], 0), entry(&[5, 6, 7], 0)];
    let copies = partition_copies(&entries, "orders", 0);
    assert_eq!(copies.rewritten, vec![(range(0, 2), 3)]);
    let check = check_partition(&copies, marks(0, 8), marks(0, 3));
    assert_eq!(
        check.findings,
        vec![Finding::DestRewritten {
            dest: range(0, 2),
            records: 3
        }]
    );
    assert_eq!(
        check.missing,
        vec![MissingRun {
            dest: range(3, 4),
            source: range(3, 4),
            records: 2
        }]
    );
}

#[test]
fn entries_that_cannot_be_checked_are_notes() {
    let mut interleaved = entry(&[0, 1], 0);
    interleaved.consecutive = false;
    let elsewhere = MapEntry::from_offsets(&[2, 3, 4], "orders", 1, 0, true).unwrap();
    let copies = partition_copies(&[interleaved, elsewhere, entry(&[5], 7)], "orders", 0);
    let check = check_partition(&copies, marks(0, 6), marks(0, 8));
    assert_eq!(
        check.findings,
        vec![
            Finding::NotConsecutive { records: 2 },
            Finding::Elsewhere { records: 3 }
        ]
    );
    assert!(check.findings.iter().all(|finding| !finding.is_drift()));
    assert_eq!(check.counts.mirrored_records, 1);
}

#[test]
fn a_missing_or_resized_destination_topic_is_drift() {
    assert_eq!(
        topic_findings(3, &DestTopicState::Present { partitions: 3 }, "dest"),
        vec![]
    );
    let resized = topic_findings(3, &DestTopicState::Present { partitions: 6 }, "dest");
    assert_eq!(
        resized,
        vec![Finding::PartitionCount { source: 3, dest: 6 }]
    );
    let missing = topic_findings(3, &DestTopicState::Missing, "dest");
    assert_eq!(
        missing[0].to_string(),
        "the destination topic does not exist in cluster dest"
    );
    assert!(missing[0].is_drift() && resized[0].is_drift());
}

#[test]
fn only_synced_configs_that_differ_are_drift() {
    // `copied` is what the config sync carries: min.insync.replicas, excluded by
    // default, is not among them, so its difference is not drift.
    let copied = configs(&[("retention.ms", "86400000"), ("cleanup.policy", "delete")]);
    let dest = configs(&[
        ("retention.ms", "3600000"),
        ("cleanup.policy", "delete"),
        ("min.insync.replicas", "2"),
    ]);
    let found = config_findings(&copied, &dest);
    assert_eq!(
        found,
        vec![Finding::ConfigDiffers {
            name: "retention.ms".to_string(),
            source_value: "86400000".to_string(),
            dest_value_opt: Some("3600000".to_string()),
        }]
    );
    assert_eq!(
        found[0].to_string(),
        "config retention.ms is 3600000 in the destination where the source has 86400000"
    );
    assert!(config_findings(&copied, &copied).is_empty());
}

#[test]
fn covered_offsets_are_subtracted_and_merged() {
    let mut covered = Intervals::default();
    covered.insert(10, 20);
    covered.insert(30, 40);
    assert_eq!(covered.uncovered(0, 50), vec![(0, 10), (20, 30), (40, 50)]);
    assert_eq!(covered.uncovered(12, 18), vec![]);
    assert_eq!(covered.uncovered(15, 35), vec![(20, 30)]);
    covered.insert(20, 30);
    assert_eq!(covered.by_start.len(), 1);
    assert_eq!(covered.uncovered(5, 45), vec![(5, 10), (40, 45)]);
}
