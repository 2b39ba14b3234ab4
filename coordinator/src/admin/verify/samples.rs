//! Verification's decisions about records compared in content, pure: which
//! mirrored records to read (a uniform random pick among a partition's latest
//! copies, repeatable from its seed), and what a source record and its copy say
//! once read.
//!
//! Key, value, headers (names, values and order) and timestamp are compared. The
//! timestamp is compared only when the destination stores the producer's time
//! (`CreateTime`): a destination topic with `message.timestamp.type=LogAppendTime`
//! (a config the sync leaves alone) stamps its own. The report says which fields
//! differ and their sizes, never their bytes: records may hold what an operator's
//! terminal should not show.

use std::collections::BTreeSet;

use rdkafka::Timestamp;

use super::checks::{Segment, Unverifiable, Watermarks};
use crate::admin::reading::RecordRead;

/// A small random generator (splitmix64): the pick needs no cryptographic
/// randomness, and a seed makes a reported pick repeatable.
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        // Multiply-shift: no modulo bias worth speaking of for these bounds.
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

/// A mirrored record to compare: its source offset and its copy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplePick {
    pub source_offset: i64,
    pub dest_offset: i64,
}

/// `count` distinct records picked uniformly among the latest copies (all of
/// them when there are no more), ascending by source offset.
pub fn pick_samples(latest: &[Segment], count: u32, rng: &mut SampleRng) -> Vec<SamplePick> {
    let total: u64 = latest.iter().map(|segment| segment.len).sum();
    let wanted = u64::from(count).min(total);
    // Floyd's algorithm: `wanted` distinct indexes in `0..total`, without
    // enumerating them all.
    let mut indexes: BTreeSet<u64> = BTreeSet::new();
    for upper in (total - wanted)..total {
        let candidate = rng.below(upper + 1);
        if !indexes.insert(candidate) {
            indexes.insert(upper);
        }
    }
    let mut picks = Vec::with_capacity(indexes.len());
    let mut segments = latest.iter();
    let mut segment_opt = segments.next();
    let mut segment_start = 0u64;
    for index in indexes {
        while let Some(segment) = segment_opt {
            if index < segment_start + segment.len {
                break;
            }
            segment_start += segment.len;
            segment_opt = segments.next();
        }
        let Some(segment) = segment_opt else {
            break;
        };
        let within = (index - segment_start) as i64;
        picks.push(SamplePick {
            source_offset: segment.source_first + within,
            dest_offset: segment.dest_first + within,
        });
    }
    picks
}

/// What to do with a pick before reading anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeReading {
    Read,
    /// The source no longer holds it: nothing to compare with.
    Unverifiable(Unverifiable),
    /// The destination no longer holds it (reported as missing records).
    Missing,
}

pub fn before_reading(pick: SamplePick, source: Watermarks, dest: Watermarks) -> BeforeReading {
    if pick.source_offset < source.low {
        BeforeReading::Unverifiable(Unverifiable::SourceExpired)
    } else if pick.source_offset >= source.high {
        // Reported as the source behind the map.
        BeforeReading::Missing
    } else if !dest.holds(pick.dest_offset) {
        BeforeReading::Missing
    } else {
        BeforeReading::Read
    }
}

/// How a compared record came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleOutcome {
    Matched,
    /// The fields that differ, in words.
    Differs(Vec<String>),
    Unverifiable(Unverifiable),
}

/// Judges a pick from the first records at or after its offsets on each side
/// (`None`: nothing from there to the partition's end).
pub fn judge_sample(
    pick: SamplePick,
    source_opt: Option<&RecordRead>,
    dest_opt: Option<&RecordRead>,
) -> SampleOutcome {
    let Some(source) = source_opt.filter(|record| record.offset == pick.source_offset) else {
        return SampleOutcome::Unverifiable(Unverifiable::SourceRemoved);
    };
    let Some(dest) = dest_opt.filter(|record| record.offset == pick.dest_offset) else {
        return SampleOutcome::Unverifiable(Unverifiable::DestRemoved);
    };
    let differences = differences(source, dest);
    if differences.is_empty() {
        SampleOutcome::Matched
    } else {
        SampleOutcome::Differs(differences)
    }
}

/// The fields in which a copy differs from its source record, in words.
pub fn differences(source: &RecordRead, dest: &RecordRead) -> Vec<String> {
    let mut found = Vec::new();
    if source.key != dest.key {
        found.push(format!(
            "key differs (source {}, destination {})",
            size(&source.key),
            size(&dest.key)
        ));
    }
    if source.value != dest.value {
        found.push(format!(
            "value differs (source {}, destination {})",
            size(&source.value),
            size(&dest.value)
        ));
    }
    if source.headers != dest.headers {
        let first_difference = source
            .headers
            .iter()
            .zip(&dest.headers)
            .position(|(source_header, dest_header)| source_header != dest_header)
            .unwrap_or(source.headers.len().min(dest.headers.len()));
        found.push(format!(
            "headers differ (source {} header(s), destination {}; first difference at header {})",
            source.headers.len(),
            dest.headers.len(),
            first_difference + 1
        ));
    }
    if let (Some(source_ms), Timestamp::CreateTime(dest_ms)) =
        (source.timestamp.to_millis(), dest.timestamp)
    {
        if source_ms != dest_ms {
            found.push(format!(
                "timestamp differs (source {source_ms}, destination {dest_ms})"
            ));
        }
    }
    found
}

fn size(bytes: &Option<Vec<u8>>) -> String {
    match bytes {
        None => "null".to_string(),
        Some(bytes) => format!("{} bytes", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(source_first: i64, dest_first: i64, len: u64) -> Segment {
        Segment {
            source_first,
            dest_first,
            len,
        }
    }

    fn record(offset: i64, value: &str) -> RecordRead {
        RecordRead {
            offset,
            key: Some(b"k".to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![("seq".to_string(), Some(b"1".to_vec()))],
            timestamp: Timestamp::CreateTime(1_000),
        }
    }

    fn pick(source_offset: i64, dest_offset: i64) -> SamplePick {
        SamplePick {
            source_offset,
            dest_offset,
        }
    }

    #[test]
    fn a_pick_is_distinct_records_through_the_map_and_repeats_with_its_seed() {
        let latest = [segment(10, 0, 5), segment(20, 5, 5)];
        let picks = pick_samples(&latest, 4, &mut SampleRng::new(7));
        assert_eq!(picks.len(), 4);
        for pick in &picks {
            let holder = latest
                .iter()
                .find(|segment| {
                    (segment.source_first..segment.source_first + segment.len as i64)
                        .contains(&pick.source_offset)
                })
                .expect("a picked offset is mirrored");
            assert_eq!(
                pick.dest_offset - holder.dest_first,
                pick.source_offset - holder.source_first
            );
        }
        let distinct: BTreeSet<i64> = picks.iter().map(|pick| pick.source_offset).collect();
        assert_eq!(distinct.len(), 4);
        assert_eq!(pick_samples(&latest, 4, &mut SampleRng::new(7)), picks);
    }

    #[test]
    fn asking_for_more_than_was_mirrored_compares_every_record() {
        let latest = [segment(0, 100, 3), segment(5, 103, 2)];
        let picks = pick_samples(&latest, 1_000, &mut SampleRng::new(1));
        let sources: Vec<i64> = picks.iter().map(|pick| pick.source_offset).collect();
        assert_eq!(sources, vec![0, 1, 2, 5, 6]);
        assert_eq!(picks[3].dest_offset, 103);
        assert!(pick_samples(&[], 10, &mut SampleRng::new(1)).is_empty());
    }

    #[test]
    fn picks_spread_over_every_segment() {
        let latest = [segment(0, 0, 1_000), segment(5_000, 1_000, 1_000)];
        let picks = pick_samples(&latest, 200, &mut SampleRng::new(3));
        let in_second = picks
            .iter()
            .filter(|pick| pick.source_offset >= 5_000)
            .count();
        assert!((60..=140).contains(&in_second), "{in_second} of 200");
    }

    #[test]
    fn records_the_source_no_longer_holds_are_unverifiable_not_drift() {
        let source = Watermarks { low: 50, high: 100 };
        let dest = Watermarks { low: 0, high: 100 };
        assert_eq!(
            before_reading(pick(10, 10), source, dest),
            BeforeReading::Unverifiable(Unverifiable::SourceExpired)
        );
        assert_eq!(
            before_reading(pick(60, 60), source, dest),
            BeforeReading::Read
        );
        assert_eq!(
            before_reading(pick(60, 60), source, Watermarks { low: 70, high: 100 }),
            BeforeReading::Missing
        );
        // Compacted on the source: the first record read is a later one.
        assert_eq!(
            judge_sample(pick(60, 60), Some(&record(61, "v")), Some(&record(60, "v"))),
            SampleOutcome::Unverifiable(Unverifiable::SourceRemoved)
        );
        assert_eq!(
            judge_sample(pick(60, 60), Some(&record(60, "v")), None),
            SampleOutcome::Unverifiable(Unverifiable::DestRemoved)
        );
    }

    #[test]
    fn a_copy_is_compared_by_key_value_headers_and_timestamp_without_showing_bytes() {
        let source = record(5, "secret-value");
        assert_eq!(
            judge_sample(pick(5, 2), Some(&source), Some(&record(2, "secret-value"))),
            SampleOutcome::Matched
        );
        let mut copy = record(2, "other");
        copy.key = None;
        copy.headers.push(("extra".to_string(), None));
        copy.timestamp = Timestamp::CreateTime(2_000);
        let SampleOutcome::Differs(found) = judge_sample(pick(5, 2), Some(&source), Some(&copy))
        else {
            panic!("the copy differs");
        };
        assert_eq!(
            found,
            vec![
                "key differs (source 1 bytes, destination null)".to_string(),
                "value differs (source 12 bytes, destination 5 bytes)".to_string(),
                "headers differ (source 1 header(s), destination 2; first difference at header 2)"
                    .to_string(),
                "timestamp differs (source 1000, destination 2000)".to_string(),
            ]
        );
        assert!(found.iter().all(|text| !text.contains("secret")));
    }

    #[test]
    fn a_destination_that_stamps_its_own_time_is_not_compared_on_timestamps() {
        let source = record(5, "v");
        let mut copy = record(2, "v");
        copy.timestamp = Timestamp::LogAppendTime(9_999);
        assert!(differences(&source, &copy).is_empty());
    }
}
