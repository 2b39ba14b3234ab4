//! Verification's decisions about topics and partitions, pure: what a
//! destination topic, its synced configs and a partition's mirrored records say
//! once read. [`super::samples`] decides about the records compared in content.
//!
//! A partition's records are judged at their **latest copy**: the offset map may
//! hold a batch twice (resent after a failure); the copy written last is the one
//! a consumer moved there reads. A mirrored record is **missing** when the source
//! still holds it and the destination partition no longer does (its log starts
//! after it, or ends before it: records deleted, the topic deleted and created
//! again). Records the source no longer holds either are retention, not drift.

use std::collections::BTreeMap;
use std::fmt;

use kmirror_common::offset_map::MapEntry;

use crate::round::config_sync::Configs;

/// Log start (low watermark) and end (high watermark) of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub low: i64,
    pub high: i64,
}

impl Watermarks {
    pub fn holds(&self, offset: i64) -> bool {
        self.low <= offset && offset < self.high
    }
}

/// Offsets from `first` to `last`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub first: i64,
    pub last: i64,
}

impl fmt::Display for OffsetRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "offset {}", self.first)
        } else {
            write!(f, "offsets {}..={}", self.first, self.last)
        }
    }
}

/// Mirrored records whose source and destination offsets both run on without
/// gaps: source `source_first + i` landed at destination `dest_first + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source_first: i64,
    pub dest_first: i64,
    pub len: u64,
}

impl Segment {
    fn source_end(&self) -> i64 {
        self.source_first + self.len as i64
    }

    fn dest_end(&self) -> i64 {
        self.dest_first + self.len as i64
    }
}

/// What the map says about one source partition's records in its destination
/// partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionCopies {
    /// The latest copy of every mirrored source record, by source offset.
    pub latest: Vec<Segment>,
    /// Destination offsets the map gives to two different source records: the
    /// partition was written again from an earlier offset (the topic deleted and
    /// created again). Merged ranges and their record counts.
    pub rewritten: Vec<(OffsetRange, u64)>,
    /// Records of batches that were not consecutive in the destination: their
    /// positions are not exact, so they are not checked.
    pub not_consecutive_records: u64,
    /// Records the map places in another destination topic or partition than
    /// the flow's (a former destination): not checked.
    pub elsewhere_records: u64,
}

/// Sorts a source partition's map entries (in the order they were written) into
/// what is checked in `dest_topic`/`dest_partition`.
pub fn partition_copies(
    entries: &[MapEntry],
    dest_topic: &str,
    dest_partition: i32,
) -> PartitionCopies {
    let mut copies = PartitionCopies::default();
    let mut every_copy: Vec<Segment> = Vec::new();
    for entry in entries {
        if entry.dest_topic != dest_topic || entry.dest_partition != dest_partition {
            copies.elsewhere_records += u64::from(entry.record_count);
        } else if !entry.consecutive {
            copies.not_consecutive_records += u64::from(entry.record_count);
        } else {
            every_copy.extend(entry_segments(entry));
        }
    }
    // Latest first: a source offset already covered has a later copy.
    let mut covered = Intervals::default();
    for segment in every_copy.iter().rev() {
        for (start, end) in covered.uncovered(segment.source_first, segment.source_end()) {
            copies.latest.push(Segment {
                source_first: start,
                dest_first: segment.dest_first + (start - segment.source_first),
                len: (end - start) as u64,
            });
        }
        covered.insert(segment.source_first, segment.source_end());
    }
    copies.latest.sort_by_key(|segment| segment.source_first);
    copies.rewritten = overlaps(&mut every_copy);
    copies
}

/// An entry's runs with the destination offsets they landed at.
fn entry_segments(entry: &MapEntry) -> impl Iterator<Item = Segment> + '_ {
    let mut dest_next = entry.dest_first_offset;
    entry.runs.iter().map(move |&(start, len)| {
        let segment = Segment {
            source_first: start,
            dest_first: dest_next,
            len: u64::from(len),
        };
        dest_next += i64::from(len);
        segment
    })
}

/// Destination ranges two segments share, merged, with their record counts.
fn overlaps(segments: &mut [Segment]) -> Vec<(OffsetRange, u64)> {
    segments.sort_by_key(|segment| segment.dest_first);
    let mut found: Vec<(OffsetRange, u64)> = Vec::new();
    let mut reached = i64::MIN;
    for segment in segments.iter() {
        if segment.dest_first < reached {
            let last = reached.min(segment.dest_end()) - 1;
            match found.last_mut() {
                Some((range, records)) if range.last + 1 >= segment.dest_first => {
                    if last > range.last {
                        *records += (last - range.last) as u64;
                        range.last = last;
                    }
                }
                _ => found.push((
                    OffsetRange {
                        first: segment.dest_first,
                        last,
                    },
                    (last - segment.dest_first + 1) as u64,
                )),
            }
        }
        reached = reached.max(segment.dest_end());
    }
    found
}

/// Disjoint half-open intervals of offsets.
#[derive(Debug, Default)]
struct Intervals {
    /// start -> end (exclusive), disjoint and not adjacent.
    by_start: BTreeMap<i64, i64>,
}

impl Intervals {
    /// The parts of `[start, end)` not covered, ascending.
    fn uncovered(&self, start: i64, end: i64) -> Vec<(i64, i64)> {
        let mut parts = Vec::new();
        let mut at = start;
        let before = self.by_start.range(..=start).next_back();
        let overlapping = before
            .into_iter()
            .chain(self.by_start.range(start + 1..end));
        for (&covered_start, &covered_end) in overlapping {
            if covered_end <= at {
                continue;
            }
            if covered_start > at {
                parts.push((at, covered_start.min(end)));
            }
            at = at.max(covered_end);
            if at >= end {
                break;
            }
        }
        if at < end {
            parts.push((at, end));
        }
        parts
    }

    fn insert(&mut self, mut start: i64, mut end: i64) {
        if let Some((&before_start, &before_end)) = self.by_start.range(..=start).next_back() {
            if before_end >= start {
                start = before_start;
                end = end.max(before_end);
                self.by_start.remove(&before_start);
            }
        }
        let touching: Vec<(i64, i64)> = self
            .by_start
            .range(start..=end)
            .map(|(&covered_start, &covered_end)| (covered_start, covered_end))
            .collect();
        for (covered_start, covered_end) in touching {
            end = end.max(covered_end);
            self.by_start.remove(&covered_start);
        }
        self.by_start.insert(start, end);
    }
}

/// Mirrored records the destination no longer holds while the source does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingRun {
    pub dest: OffsetRange,
    pub source: OffsetRange,
    pub records: u64,
}

/// One partition's counts, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionCounts {
    pub mirrored_records: u64,
    pub first_source_offset_opt: Option<i64>,
    pub last_source_offset_opt: Option<i64>,
    pub dest_held_records: u64,
    pub source_expired_records: u64,
}

/// What the count check of a partition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCheck {
    pub counts: PartitionCounts,
    /// Missing records, by destination offset; each is drift unless the
    /// destination's retention explains it ([`missing_finding`]).
    pub missing: Vec<MissingRun>,
    /// Drift and notes found from the counts alone.
    pub findings: Vec<Finding>,
}

/// Checks a partition's latest copies against both partitions' watermarks.
pub fn check_partition(
    copies: &PartitionCopies,
    source: Watermarks,
    dest: Watermarks,
) -> PartitionCheck {
    let mut counts = PartitionCounts {
        first_source_offset_opt: copies.latest.first().map(|segment| segment.source_first),
        last_source_offset_opt: copies.latest.last().map(|segment| segment.source_end() - 1),
        ..PartitionCounts::default()
    };
    let mut missing: Vec<MissingRun> = Vec::new();
    let mut beyond_source = 0u64;
    for segment in &copies.latest {
        counts.mirrored_records += segment.len;
        counts.dest_held_records +=
            overlap_len(segment.dest_first, segment.dest_end(), dest.low, dest.high);
        counts.source_expired_records += overlap_len(
            segment.source_first,
            segment.source_end(),
            i64::MIN,
            source.low,
        );
        beyond_source += overlap_len(
            segment.source_first,
            segment.source_end(),
            source.high,
            i64::MAX,
        );
        // The part the source still holds, and where it is in the destination.
        let start = segment.source_first.max(source.low);
        let end = segment.source_end().min(source.high);
        if start >= end {
            continue;
        }
        let dest_start = segment.dest_first + (start - segment.source_first);
        let dest_end = dest_start + (end - start);
        for (gone_start, gone_end) in [
            (dest_start, dest_end.min(dest.low)),
            (dest_start.max(dest.high), dest_end),
        ] {
            if gone_start < gone_end {
                let source_start = start + (gone_start - dest_start);
                missing.push(MissingRun {
                    dest: OffsetRange {
                        first: gone_start,
                        last: gone_end - 1,
                    },
                    source: OffsetRange {
                        first: source_start,
                        last: source_start + (gone_end - gone_start) - 1,
                    },
                    records: (gone_end - gone_start) as u64,
                });
            }
        }
    }
    missing.sort_by_key(|run| run.dest.first);
    let mut merged: Vec<MissingRun> = Vec::new();
    for run in missing {
        push_missing(&mut merged, run);
    }

    let mut findings = Vec::new();
    if beyond_source > 0 {
        findings.push(Finding::SourceBehindMap {
            last_mirrored: counts.last_source_offset_opt.unwrap_or_default(),
            source_log_end: source.high,
            records: beyond_source,
        });
    }
    for (range, records) in &copies.rewritten {
        findings.push(Finding::DestRewritten {
            dest: *range,
            records: *records,
        });
    }
    if copies.not_consecutive_records > 0 {
        findings.push(Finding::NotConsecutive {
            records: copies.not_consecutive_records,
        });
    }
    if copies.elsewhere_records > 0 {
        findings.push(Finding::Elsewhere {
            records: copies.elsewhere_records,
        });
    }
    PartitionCheck {
        counts,
        missing: merged,
        findings,
    }
}

/// Appends a run, merged into the last one when their destination offsets touch.
fn push_missing(runs: &mut Vec<MissingRun>, run: MissingRun) {
    match runs.last_mut() {
        Some(last) if last.dest.last + 1 == run.dest.first => {
            last.dest.last = run.dest.last;
            last.source.first = last.source.first.min(run.source.first);
            last.source.last = last.source.last.max(run.source.last);
            last.records += run.records;
        }
        _ => runs.push(run),
    }
}

/// How many of `[start, end)` fall in `[low, high)`.
fn overlap_len(start: i64, end: i64, low: i64, high: i64) -> u64 {
    (end.min(high) - start.max(low)).max(0) as u64
}

/// What the destination topic's retention deletes, as read from its configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestRetention {
    /// `retention.ms` when `cleanup.policy` deletes; `None` when records are
    /// kept forever or only compacted.
    pub retention_ms_opt: Option<i64>,
}

impl DestRetention {
    pub fn from_configs(configs: &Configs) -> Self {
        let deletes = configs
            .get("cleanup.policy")
            .is_none_or(|policy| policy.split(',').any(|part| part.trim() == "delete"));
        let retention_ms_opt = configs
            .get("retention.ms")
            .and_then(|value| value.parse::<i64>().ok())
            .filter(|ms| *ms >= 0 && deletes);
        Self { retention_ms_opt }
    }
}

/// Drift, or a note when the destination's retention explains the gap: the
/// newest missing record (its source timestamp) is older than the destination
/// keeps records, so its segment may have been deleted there first.
pub fn missing_finding(
    run: MissingRun,
    dest: Watermarks,
    newest_timestamp_opt: Option<i64>,
    retention: DestRetention,
    now_ms: i64,
) -> Finding {
    match (newest_timestamp_opt, retention.retention_ms_opt) {
        (Some(timestamp), Some(retention_ms))
            if timestamp < now_ms.saturating_sub(retention_ms) =>
        {
            Finding::RetentionExpired { run, retention_ms }
        }
        _ => Finding::RecordsMissing { run, dest },
    }
}

/// Where a destination topic stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestTopicState {
    Missing,
    /// It exists but its metadata is incomplete (being created, no leader).
    Unavailable(String),
    Present {
        partitions: i32,
    },
}

/// Drift in a destination topic's existence and partition count.
pub fn topic_findings(
    source_partitions: i32,
    dest: &DestTopicState,
    dest_cluster: &str,
) -> Vec<Finding> {
    match dest {
        DestTopicState::Missing => vec![Finding::DestTopicMissing {
            dest_cluster: dest_cluster.to_string(),
            cause_opt: None,
        }],
        DestTopicState::Unavailable(cause) => vec![Finding::DestTopicMissing {
            dest_cluster: dest_cluster.to_string(),
            cause_opt: Some(cause.clone()),
        }],
        DestTopicState::Present { partitions } if *partitions != source_partitions => {
            vec![Finding::PartitionCount {
                source: source_partitions,
                dest: *partitions,
            }]
        }
        DestTopicState::Present { .. } => Vec::new(),
    }
}

/// Synced configs whose destination value differs from the source's. `copied`
/// are the source configs the config sync carries (its exclusions left out),
/// `dest` every config the destination topic has.
pub fn config_findings(copied: &Configs, dest: &Configs) -> Vec<Finding> {
    copied
        .iter()
        .filter(|(name, value)| dest.get(*name) != Some(*value))
        .map(|(name, value)| Finding::ConfigDiffers {
            name: name.clone(),
            source_value: value.clone(),
            dest_value_opt: dest.get(name).cloned(),
        })
        .collect()
}

/// Why a sampled record could not be compared (not drift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unverifiable {
    /// Before the source's log start: deleted by retention.
    SourceExpired,
    /// Gone from the source inside its log: compacted.
    SourceRemoved,
    /// Gone from the destination inside its log: compacted.
    DestRemoved,
}

impl fmt::Display for Unverifiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unverifiable::SourceExpired => "the source deleted them (retention)",
            Unverifiable::SourceRemoved => "the source no longer holds them (compaction)",
            Unverifiable::DestRemoved => "the destination no longer holds them (compaction)",
        })
    }
}

/// One thing verification found about a topic or partition: drift fails it, a
/// note does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    DestTopicMissing {
        dest_cluster: String,
        cause_opt: Option<String>,
    },
    PartitionCount {
        source: i32,
        dest: i32,
    },
    ConfigDiffers {
        name: String,
        source_value: String,
        dest_value_opt: Option<String>,
    },
    ConfigsUnreadable {
        cause: String,
    },
    RecordsMissing {
        run: MissingRun,
        dest: Watermarks,
    },
    DestRewritten {
        dest: OffsetRange,
        records: u64,
    },
    SourceBehindMap {
        last_mirrored: i64,
        source_log_end: i64,
        records: u64,
    },
    RecordDiffers {
        source_offset: i64,
        dest_offset: i64,
        differences: Vec<String>,
    },
    RetentionExpired {
        run: MissingRun,
        retention_ms: i64,
    },
    SamplesUnverifiable {
        reason: Unverifiable,
        records: u32,
    },
    NotConsecutive {
        records: u64,
    },
    Elsewhere {
        records: u64,
    },
}

impl Finding {
    /// The kind's stable name (the report's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::DestTopicMissing { .. } => "dest_topic_missing",
            Finding::PartitionCount { .. } => "partition_count",
            Finding::ConfigDiffers { .. } => "config",
            Finding::ConfigsUnreadable { .. } => "configs_unreadable",
            Finding::RecordsMissing { .. } => "records_missing",
            Finding::DestRewritten { .. } => "dest_rewritten",
            Finding::SourceBehindMap { .. } => "source_behind_map",
            Finding::RecordDiffers { .. } => "record_differs",
            Finding::RetentionExpired { .. } => "retention_expired",
            Finding::SamplesUnverifiable { .. } => "samples_unverifiable",
            Finding::NotConsecutive { .. } => "not_consecutive",
            Finding::Elsewhere { .. } => "elsewhere",
        }
    }

    pub fn is_drift(&self) -> bool {
        !matches!(
            self,
            Finding::RetentionExpired { .. }
                | Finding::SamplesUnverifiable { .. }
                | Finding::NotConsecutive { .. }
                | Finding::Elsewhere { .. }
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::DestTopicMissing {
                dest_cluster,
                cause_opt: None,
            } => write!(f, "the destination topic does not exist in cluster {dest_cluster}"),
            Finding::DestTopicMissing {
                dest_cluster,
                cause_opt: Some(cause),
            } => write!(
                f,
                "the destination topic cannot be looked at in cluster {dest_cluster}: {cause}"
            ),
            Finding::PartitionCount { source, dest } => write!(
                f,
                "the destination topic has {dest} partitions where the source has {source}: records go to the partition of their key, so partitions are not compared"
            ),
            Finding::ConfigDiffers {
                name,
                source_value,
                dest_value_opt: Some(dest_value),
            } => write!(
                f,
                "config {name} is {dest_value} in the destination where the source has {source_value}"
            ),
            Finding::ConfigDiffers {
                name,
                source_value,
                dest_value_opt: None,
            } => write!(
                f,
                "config {name} is not set in the destination where the source has {source_value}"
            ),
            Finding::ConfigsUnreadable { cause } => {
                write!(f, "the topic configs cannot be read: {cause}")
            }
            Finding::RecordsMissing { run, dest } => {
                let held = if dest.low < dest.high {
                    format!(
                        "the destination partition holds {}",
                        OffsetRange {
                            first: dest.low,
                            last: dest.high - 1
                        }
                    )
                } else {
                    format!("the destination partition is empty at offset {}", dest.high)
                };
                write!(
                    f,
                    "{} mirrored record(s) at destination {} are gone ({held}), while the source still holds them at {}",
                    run.records, run.dest, run.source
                )
            }
            Finding::DestRewritten { dest, records } => write!(
                f,
                "the offset map puts two different source records at each of destination {dest} ({records} record(s)): the destination partition was written again from an earlier offset (deleted and created again?)"
            ),
            Finding::SourceBehindMap {
                last_mirrored,
                source_log_end,
                records,
            } => write!(
                f,
                "the source partition ends at offset {source_log_end} but the offset map says offsets up to {last_mirrored} were mirrored ({records} record(s) past its end): the source topic was deleted and created again, or truncated"
            ),
            Finding::RecordDiffers {
                source_offset,
                dest_offset,
                differences,
            } => write!(
                f,
                "source offset {source_offset} and its copy at destination offset {dest_offset} differ: {}",
                differences.join(", ")
            ),
            Finding::RetentionExpired { run, retention_ms } => write!(
                f,
                "{} mirrored record(s) at destination {} are gone, older than the destination's retention.ms {retention_ms}: deleted by retention",
                run.records, run.dest
            ),
            Finding::SamplesUnverifiable { reason, records } => write!(
                f,
                "{records} sampled record(s) not compared: {reason}"
            ),
            Finding::NotConsecutive { records } => write!(
                f,
                "{records} record(s) of batches interleaved with other writes in the destination: their positions are not exact, so they are not checked"
            ),
            Finding::Elsewhere { records } => write!(
                f,
                "{records} record(s) the offset map places in another destination topic or partition (a former destination): not checked"
            ),
        }
    }
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
