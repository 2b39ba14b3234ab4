//! The exact offset map: where each mirrored source offset landed in the destination.
//!
//! Writers append one entry per acknowledged batch to a per-fleet internal topic on
//! the destination cluster ([`map_topic`]), so translation works with the source
//! cluster and etcd gone. This module is the one place that names that topic, picks
//! an entry's map partition, encodes and decodes entries, and translates a source
//! offset from a partition's entries (a pure search, unit-tested here).
//!
//! # Wire format (version 1, big-endian)
//! Key: `u8 version=1`, `u16 len + flow`, `u16 len + source topic`,
//! `i32 source partition`, `i64 first source offset`. One key per batch start, so
//! compaction keeps the latest write of a resent batch.
//!
//! Value: `u8 version=1`, `u8 flags` (bit 0: the records were *not* consecutive in
//! the destination), `u16 len + destination topic`, `i32 destination partition`,
//! `i64 destination first offset`, `u32 record count`, `i64 last source offset`,
//! `i64 next source offset` (where the fetcher read on after the batch),
//! `u32 run count`, then per run `i64 start offset, u32 length`: the source offsets
//! present, as runs of consecutive offsets (gaps are transaction markers, aborted or
//! compacted records). The run lengths add up to the record count. With flag bit 1,
//! `i64 read from` follows: the source offset the fetcher read from to get the
//! batch (the previous batch's next offset, or where it started); the offsets from
//! there to the first record hold no record (compacted away, markers), so they
//! translate to the batch's first record. Readers of an older version ignore it.

use std::fmt;

/// Partitions of a map topic. Fixed: an entry's partition is a hash of its source
/// partition modulo this, and readers compute the same.
pub const MAP_PARTITIONS: i32 = 6;

/// Retention of the map topic when no destination topic tells a longer one: Kafka's
/// default `retention.ms` (7 days), the retention destination topics get unless
/// their source says otherwise.
pub const DEFAULT_MAP_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

const VERSION: u8 = 1;
const FLAG_NOT_CONSECUTIVE: u8 = 1;
const FLAG_READ_FROM: u8 = 2;

/// The fleet's map topic: `__kmirror.<fleet>.offsets`. The `__` prefix marks it
/// internal (Kafka's own `__consumer_offsets` convention) and every flow's topic
/// discovery skips such topics. Characters Kafka refuses in topic names become `_`.
pub fn map_topic(fleet: &str) -> String {
    let fleet: String = fleet
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        // Kafka's limit is 249 characters; 18 are the prefix and suffix.
        .take(231)
        .collect();
    format!("__kmirror.{fleet}.offsets")
}

/// The map partition of a source partition's entries: all in one partition, in order.
pub fn map_partition(flow: &str, topic: &str, partition: i32) -> i32 {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let mut hash: u32 = 0x811c_9dc5;
    let partition_bytes = partition.to_be_bytes();
    let bytes = flow
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(topic.as_bytes())
        .chain(&[0u8])
        .chain(&partition_bytes);
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % MAP_PARTITIONS as u32) as i32
}

/// The source partition a map entry describes, and where its batch started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapKey {
    pub flow: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
}

/// Where one batch's records landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub last_offset: i64,
    /// The source offset the fetcher reads after this batch: past `last_offset`
    /// when transaction markers or aborted records follow its last record.
    pub next_offset: i64,
    /// Source offsets present: (start, length) runs, ascending.
    pub runs: Vec<(i64, u32)>,
    pub dest_topic: String,
    pub dest_partition: i32,
    pub dest_first_offset: i64,
    pub record_count: u32,
    /// Whether the batch's records are consecutive in the destination partition
    /// (delivery reports told); when not, its offsets cannot be translated.
    pub consecutive: bool,
    /// Where the fetcher read from to get the batch, when known: offsets from there
    /// to the first record hold none.
    pub read_from: Option<i64>,
}

/// Why bytes read from the map topic are not an entry.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapDecodeError {
    #[error("map {what} is cut off at byte {at}")]
    Truncated { what: &'static str, at: usize },
    #[error("map {what} has version {version}; this kmirror reads version {VERSION}")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("map {what} holds a name that is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("map entry is inconsistent: {0}")]
    Inconsistent(String),
}

impl MapKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.flow.len() + 2 + self.topic.len() + 12);
        out.push(VERSION);
        put_str(&mut out, &self.flow);
        put_str(&mut out, &self.topic);
        out.extend_from_slice(&self.partition.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MapDecodeError> {
        let mut reader = Reader::new(bytes, "key");
        reader.version()?;
        let key = MapKey {
            flow: reader.string()?,
            topic: reader.string()?,
            partition: reader.i32()?,
            first_offset: reader.i64()?,
        };
        Ok(key)
    }
}

impl MapEntry {
    /// The entry of records at these source offsets (ascending), written from
    /// `dest_first_offset` on.
    pub fn from_offsets(
        offsets: &[i64],
        dest_topic: &str,
        dest_partition: i32,
        dest_first_offset: i64,
        consecutive: bool,
    ) -> Option<Self> {
        Some(Self {
            last_offset: *offsets.last()?,
            next_offset: offsets.last()? + 1,
            runs: runs_of(offsets),
            dest_topic: dest_topic.to_string(),
            dest_partition,
            dest_first_offset,
            record_count: offsets.len() as u32,
            consecutive,
            read_from: None,
        })
    }

    /// The entry of records at the source offsets of `runs` (see [`runs_of`]).
    pub fn from_runs(
        runs: Vec<(i64, u32)>,
        next_offset: i64,
        dest_topic: &str,
        dest_partition: i32,
        dest_first_offset: i64,
        consecutive: bool,
    ) -> Option<Self> {
        let (start, len) = *runs.last()?;
        let last_offset = start + i64::from(len) - 1;
        Some(Self {
            last_offset,
            next_offset: next_offset.max(last_offset + 1),
            record_count: runs.iter().map(|run| run.1).sum(),
            runs,
            dest_topic: dest_topic.to_string(),
            dest_partition,
            dest_first_offset,
            consecutive,
            read_from: None,
        })
    }

    /// The entry, saying the fetcher read from `read_from` to get it (kept only
    /// when it is at or before the first record).
    pub fn read_from(mut self, read_from_opt: Option<i64>) -> Self {
        self.read_from = read_from_opt.filter(|&read_from| read_from <= self.first_offset());
        self
    }

    /// The first offset the entry accounts for: where the fetcher read from, or
    /// its first record.
    pub fn covered_from(&self) -> i64 {
        self.read_from.unwrap_or_else(|| self.first_offset())
    }

    /// Takes `next` into this entry when it continues it exactly: same
    /// destination partition, written right after it there, starting where the
    /// fetcher read on after this one. Translation through the merged entry is
    /// the same as through both, so a reader keeps one entry per unbroken
    /// stretch of a partition instead of one per batch.
    pub fn absorb(&mut self, next: &MapEntry) -> bool {
        let continues = self.consecutive
            && next.consecutive
            && self.dest_topic == next.dest_topic
            && self.dest_partition == next.dest_partition
            && next.first_offset() > self.last_offset
            && next.covered_from() <= self.next_offset
            && self.dest_first_offset + i64::from(self.record_count) == next.dest_first_offset;
        let Some(record_count) = self.record_count.checked_add(next.record_count) else {
            return false;
        };
        if !continues {
            return false;
        }
        for &(start, len) in &next.runs {
            match self.runs.last_mut() {
                Some((last_start, last_len))
                    if *last_start + i64::from(*last_len) == start
                        && last_len.checked_add(len).is_some() =>
                {
                    *last_len += len
                }
                _ => self.runs.push((start, len)),
            }
        }
        self.record_count = record_count;
        self.last_offset = next.last_offset;
        self.next_offset = next.next_offset;
        true
    }

    pub fn first_offset(&self) -> i64 {
        self.runs.first().map_or(self.last_offset, |run| run.0)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.dest_topic.len() + self.runs.len() * 12);
        out.push(VERSION);
        let mut flags = 0;
        if !self.consecutive {
            flags |= FLAG_NOT_CONSECUTIVE;
        }
        if self.read_from.is_some() {
            flags |= FLAG_READ_FROM;
        }
        out.push(flags);
        put_str(&mut out, &self.dest_topic);
        out.extend_from_slice(&self.dest_partition.to_be_bytes());
        out.extend_from_slice(&self.dest_first_offset.to_be_bytes());
        out.extend_from_slice(&self.record_count.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&(self.runs.len() as u32).to_be_bytes());
        for (start, len) in &self.runs {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
        }
        if let Some(read_from) = self.read_from {
            out.extend_from_slice(&read_from.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MapDecodeError> {
        let mut reader = Reader::new(bytes, "entry");
        reader.version()?;
        let flags = reader.u8()?;
        let dest_topic = reader.string()?;
        let dest_partition = reader.i32()?;
        let dest_first_offset = reader.i64()?;
        let record_count = reader.u32()?;
        let last_offset = reader.i64()?;
        let next_offset = reader.i64()?;
        let run_count = reader.u32()? as usize;
        if run_count > bytes.len() / 12 {
            return Err(MapDecodeError::Truncated {
                what: "entry",
                at: bytes.len(),
            });
        }
        let mut runs = Vec::with_capacity(run_count);
        for _ in 0..run_count {
            runs.push((reader.i64()?, reader.u32()?));
        }
        let read_from = if flags & FLAG_READ_FROM != 0 {
            Some(reader.i64()?)
        } else {
            None
        };
        let entry = MapEntry {
            last_offset,
            next_offset,
            runs,
            dest_topic,
            dest_partition,
            dest_first_offset,
            record_count,
            consecutive: flags & FLAG_NOT_CONSECUTIVE == 0,
            read_from,
        };
        entry.check()?;
        Ok(entry)
    }

    fn check(&self) -> Result<(), MapDecodeError> {
        let total: u64 = self.runs.iter().map(|run| u64::from(run.1)).sum();
        if total != u64::from(self.record_count) || self.record_count == 0 {
            return Err(MapDecodeError::Inconsistent(format!(
                "its runs hold {total} offsets where it counts {} records",
                self.record_count
            )));
        }
        let mut previous_end = i64::MIN;
        for &(start, len) in &self.runs {
            if len == 0 || start < previous_end {
                return Err(MapDecodeError::Inconsistent(
                    "its runs are not ascending".into(),
                ));
            }
            // A damaged record may hold a run past the largest offset.
            previous_end = start.checked_add(i64::from(len)).ok_or_else(|| {
                MapDecodeError::Inconsistent(format!(
                    "its run of {len} offsets from {start} ends past the largest offset"
                ))
            })?;
        }
        if self.next_offset <= self.last_offset {
            return Err(MapDecodeError::Inconsistent(format!(
                "its next offset {} is not past its last offset {}",
                self.next_offset, self.last_offset
            )));
        }
        if self
            .read_from
            .is_some_and(|read_from| read_from > self.first_offset())
        {
            return Err(MapDecodeError::Inconsistent(format!(
                "it was read from {} past its first record",
                self.covered_from()
            )));
        }
        if previous_end - 1 != self.last_offset {
            return Err(MapDecodeError::Inconsistent(format!(
                "its runs end at {} where its last offset is {}",
                previous_end - 1,
                self.last_offset
            )));
        }
        Ok(())
    }

    /// Index, in the batch, of the first present source offset at or after `offset`
    /// (`None` past the last one).
    fn index_at_or_after(&self, offset: i64) -> Option<i64> {
        let mut index = 0i64;
        for &(start, len) in &self.runs {
            let end = start + i64::from(len);
            if offset < end {
                return Some(index + (offset - start).max(0));
            }
            index += i64::from(len);
        }
        None
    }
}

/// Adds an entry read from the map to a partition's entries (in map order),
/// merged into the last one when it continues it.
pub fn push_merged(entries: &mut Vec<MapEntry>, entry: MapEntry) {
    if let Some(last) = entries.last_mut() {
        if last.absorb(&entry) {
            return;
        }
    }
    entries.push(entry);
}

/// Runs of consecutive offsets of an ascending list.
pub fn runs_of(offsets: &[i64]) -> Vec<(i64, u32)> {
    let mut runs: Vec<(i64, u32)> = Vec::new();
    for &offset in offsets {
        match runs.last_mut() {
            Some((start, len)) if *start + i64::from(*len) == offset => *len += 1,
            _ => runs.push((offset, 1)),
        }
    }
    runs
}

/// Where a source offset is in the destination, or why it cannot be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// A consumer positioned at `dest_offset` of this destination partition reads
    /// exactly the records the source offset and those after it hold.
    Exact {
        dest_topic: String,
        dest_partition: i32,
        dest_offset: i64,
    },
    /// Nothing at or after this source offset was mirrored yet.
    NotMirroredYet { last_mirrored_opt: Option<i64> },
    /// The offset is before the first one the map holds (mirrored from a later
    /// start, or its entry was pruned with the destination's records).
    BeforeMap { first_mapped: i64 },
    /// The batch that holds it was not written consecutively in the destination.
    NotConsecutive,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Translation::Exact {
                dest_topic,
                dest_partition,
                dest_offset,
            } => write!(f, "{dest_topic}/{dest_partition}@{dest_offset}"),
            Translation::NotMirroredYet {
                last_mirrored_opt: Some(last),
            } => write!(
                f,
                "not mirrored yet: the last mirrored source offset is {last}"
            ),
            Translation::NotMirroredYet {
                last_mirrored_opt: None,
            } => write!(f, "not mirrored yet: nothing of this partition is mirrored"),
            Translation::BeforeMap { first_mapped } => write!(
                f,
                "before the first mirrored source offset {first_mapped}: not mirrored, or pruned with the destination's records"
            ),
            Translation::NotConsecutive => write!(
                f,
                "the batch holding it was interleaved with other writes in the destination; no exact position"
            ),
        }
    }
}

/// Translates `offset` of one source partition through its map entries (any order).
///
/// The destination position is that of the first present source offset at or after
/// `offset`: a consumer's committed position may point at a transaction marker or a
/// compacted record, and the record it reads next is the next present one. When a
/// resend wrote a batch twice, the copy with the highest destination offset wins (a
/// consumer there reads the later copy and what follows it). An offset after the
/// last mirrored record, up to where the fetcher read on (markers, aborted records),
/// translates to the position after that record's copy.
pub fn translate(entries: &[MapEntry], offset: i64) -> Translation {
    let Some(first_mapped) = entries.iter().map(MapEntry::covered_from).min() else {
        return Translation::NotMirroredYet {
            last_mirrored_opt: None,
        };
    };
    if offset < first_mapped {
        return Translation::BeforeMap { first_mapped };
    }
    // The entry holding the first present offset >= `offset`: the smallest such
    // offset, then the highest destination copy of it.
    let mut best: Option<(i64, &MapEntry, i64)> = None;
    for entry in entries {
        let Some(index) = entry.index_at_or_after(offset) else {
            continue;
        };
        let source_offset = present_offset(entry, index);
        let better = match best {
            None => true,
            Some((best_offset, best_entry, _)) => {
                source_offset < best_offset
                    || (source_offset == best_offset
                        && entry.dest_first_offset > best_entry.dest_first_offset)
            }
        };
        if better {
            best = Some((source_offset, entry, index));
        }
    }
    if let Some((_, entry, index)) = best {
        if !entry.consecutive {
            return Translation::NotConsecutive;
        }
        return Translation::Exact {
            dest_topic: entry.dest_topic.clone(),
            dest_partition: entry.dest_partition,
            dest_offset: entry.dest_first_offset + index,
        };
    }
    // Past every present offset: exact only up to where the fetcher read after
    // the last mirrored record (markers or aborted records may follow it).
    let last = entries
        .iter()
        .max_by_key(|entry| (entry.last_offset, entry.dest_first_offset))
        .expect("entries are not empty");
    if offset <= last.next_offset && last.consecutive {
        return Translation::Exact {
            dest_topic: last.dest_topic.clone(),
            dest_partition: last.dest_partition,
            dest_offset: last.dest_first_offset + i64::from(last.record_count),
        };
    }
    Translation::NotMirroredYet {
        last_mirrored_opt: Some(last.last_offset),
    }
}

fn present_offset(entry: &MapEntry, mut index: i64) -> i64 {
    for &(start, len) in &entry.runs {
        if index < i64::from(len) {
            return start + index;
        }
        index -= i64::from(len);
    }
    entry.last_offset
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, at: 0, what }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], MapDecodeError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(MapDecodeError::Truncated {
                what: self.what,
                at: self.at,
            });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn version(&mut self) -> Result<(), MapDecodeError> {
        match self.u8()? {
            VERSION => Ok(()),
            version => Err(MapDecodeError::UnknownVersion {
                what: self.what,
                version,
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, MapDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, MapDecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i32(&mut self) -> Result<i32, MapDecodeError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn i64(&mut self) -> Result<i64, MapDecodeError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, MapDecodeError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let what = self.what;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| MapDecodeError::NotUtf8 { what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offsets: &[i64], dest_first_offset: i64) -> MapEntry {
        MapEntry::from_offsets(offsets, "orders", 2, dest_first_offset, true).unwrap()
    }

    fn at(dest_offset: i64) -> Translation {
        Translation::Exact {
            dest_topic: "orders".into(),
            dest_partition: 2,
            dest_offset,
        }
    }

    #[test]
    fn offsets_the_fetcher_read_over_translate_to_the_next_record() {
        // A compacted partition: the fetcher read from 0, the first record left
        // is at 550, then the next batch was read from 600 with its first at 700.
        let first = entry(&[550, 551], 10).read_from(Some(0));
        let second = entry(&[700], 12).read_from(Some(552));
        assert_eq!(MapEntry::decode(&first.encode()).unwrap(), first);
        let entries = [first.clone(), second.clone()];
        assert_eq!(translate(&entries, 0), at(10));
        assert_eq!(translate(&entries, 294), at(10));
        assert_eq!(translate(&entries, 552), at(12));
        assert_eq!(translate(&entries, 650), at(12));
        // Unknown where the fetcher read from: before the first record is not told.
        assert_eq!(
            translate(&[entry(&[550], 10)], 294),
            Translation::BeforeMap { first_mapped: 550 }
        );
        // Read from past its first record: not kept.
        assert_eq!(entry(&[550], 10).read_from(Some(551)).read_from, None);
        // Continuing read positions merge.
        let mut merged = Vec::new();
        push_merged(&mut merged, first);
        push_merged(&mut merged, second);
        assert_eq!(merged.len(), 1);
        assert_eq!(translate(&merged, 294), at(10));
        assert_eq!(translate(&merged, 650), at(12));
    }

    #[test]
    fn merged_entries_translate_every_offset_as_the_batches_did() {
        // Batches with markers between them, a resend written twice, a gap the
        // fetcher did not read over, and a batch interleaved with other writes.
        let mut gapped = entry(&[10, 11, 12], 100);
        gapped.next_offset = 14;
        let batches = vec![
            entry(&[0, 1, 2], 90),
            entry(&[3, 4, 6], 93),
            entry(&[7, 8, 9], 96),
            entry(&[7, 8, 9], 120),
            gapped,
            entry(&[14, 15], 103),
            entry(&[20, 21], 105),
            MapEntry::from_offsets(&[22, 23], "orders", 2, 107, false).unwrap(),
            entry(&[24], 110),
        ];
        let mut merged = Vec::new();
        for batch in batches.clone() {
            push_merged(&mut merged, batch);
        }
        assert!(merged.len() < batches.len(), "{merged:?}");
        for offset in -1..30 {
            assert_eq!(
                translate(&merged, offset),
                translate(&batches, offset),
                "offset {offset}"
            );
        }
        // One unbroken stretch is one entry, its runs joined.
        let mut stretch = Vec::new();
        for first in (0..1_000).step_by(100) {
            let offsets: Vec<i64> = (first..first + 100).collect();
            push_merged(&mut stretch, entry(&offsets, first));
        }
        assert_eq!(stretch.len(), 1);
        assert_eq!(stretch[0].runs, vec![(0, 1_000)]);
        assert_eq!(stretch[0].record_count, 1_000);
    }

    #[test]
    fn keys_and_entries_round_trip_with_gaps_encoded_as_runs() {
        let key = MapKey {
            flow: "dr".into(),
            topic: "orders".into(),
            partition: 3,
            first_offset: 100,
        };
        assert_eq!(MapKey::decode(&key.encode()).unwrap(), key);
        let gapped = entry(&[100, 101, 102, 104, 105, 109], 7);
        assert_eq!(gapped.runs, vec![(100, 3), (104, 2), (109, 1)]);
        assert_eq!(MapEntry::decode(&gapped.encode()).unwrap(), gapped);
        // A batch without gaps is one run, whatever its size.
        let offsets: Vec<i64> = (0..10_000).collect();
        assert_eq!(entry(&offsets, 0).runs, vec![(0, 10_000)]);
    }

    #[test]
    fn damaged_map_records_are_typed_errors() {
        let bytes = entry(&[5, 6], 0).encode();
        assert!(matches!(
            MapEntry::decode(&bytes[..bytes.len() - 1]),
            Err(MapDecodeError::Truncated { what: "entry", .. })
        ));
        let mut future = bytes.clone();
        future[0] = 9;
        assert_eq!(
            MapEntry::decode(&future),
            Err(MapDecodeError::UnknownVersion {
                what: "entry",
                version: 9
            })
        );
        let mut miscounted = entry(&[5, 6], 0);
        miscounted.record_count = 3;
        assert!(matches!(
            MapEntry::decode(&miscounted.encode()),
            Err(MapDecodeError::Inconsistent(_))
        ));
        assert!(MapKey::decode(&[1, 0, 5, b'a']).is_err());
    }

    #[test]
    fn a_run_past_the_largest_offset_is_an_inconsistent_entry() {
        let mut moved = entry(&[0], 0);
        moved.runs[0].0 = i64::MAX;
        assert_eq!(
            MapEntry::decode(&moved.encode()),
            Err(MapDecodeError::Inconsistent(format!(
                "its run of 1 offsets from {} ends past the largest offset",
                i64::MAX
            )))
        );
    }

    #[test]
    fn an_offset_translates_to_its_records_position_across_gaps() {
        // Offsets 13 and 14 are a commit marker and an aborted record.
        let entries = [entry(&[10, 11, 12], 0), entry(&[15, 16, 18, 19], 3)];
        assert_eq!(translate(&entries, 10), at(0));
        assert_eq!(translate(&entries, 12), at(2));
        // In a gap between batches: the next present record.
        assert_eq!(translate(&entries, 13), at(3));
        assert_eq!(translate(&entries, 14), at(3));
        // In a gap inside a batch.
        assert_eq!(translate(&entries, 17), at(5));
        assert_eq!(translate(&entries, 19), at(6));
        // Right after the last mirrored record: the end of its copy.
        assert_eq!(translate(&entries, 20), at(7));
        // Past a commit marker that followed it, as far as the fetcher read.
        let mut marked = entries.to_vec();
        marked[1].next_offset = 21;
        assert_eq!(translate(&marked, 21), at(7));
        assert!(matches!(
            translate(&marked, 22),
            Translation::NotMirroredYet { .. }
        ));
        assert_eq!(MapEntry::decode(&marked[1].encode()).unwrap(), marked[1]);
    }

    #[test]
    fn a_resent_batch_translates_to_its_latest_copy() {
        // Batch 10..=12 written at 0, then resent from 11 after a failure.
        let entries = [entry(&[10, 11, 12], 0), entry(&[11, 12, 13], 3)];
        assert_eq!(translate(&entries, 10), at(0));
        assert_eq!(translate(&entries, 11), at(3));
        assert_eq!(translate(&entries, 12), at(4));
        assert_eq!(translate(&entries, 14), at(6));
    }

    #[test]
    fn offsets_outside_the_map_are_reported_never_guessed() {
        let entries = [entry(&[10, 11], 0)];
        assert_eq!(
            translate(&entries, 13),
            Translation::NotMirroredYet {
                last_mirrored_opt: Some(11)
            }
        );
        assert_eq!(
            translate(&entries, 9),
            Translation::BeforeMap { first_mapped: 10 }
        );
        assert_eq!(
            translate(&[], 0),
            Translation::NotMirroredYet {
                last_mirrored_opt: None
            }
        );
        let interleaved = [MapEntry::from_offsets(&[10, 11], "orders", 2, 0, false).unwrap()];
        assert_eq!(translate(&interleaved, 11), Translation::NotConsecutive);
    }

    #[test]
    fn the_map_topic_is_internal_and_legal_whatever_the_fleet_name() {
        assert_eq!(map_topic("prod"), "__kmirror.prod.offsets");
        assert_eq!(map_topic("a/b c"), "__kmirror.a_b_c.offsets");
        assert!(map_topic(&"x".repeat(400)).len() <= 249);
        let partition = map_partition("dr", "orders", 3);
        assert!((0..MAP_PARTITIONS).contains(&partition));
        assert_eq!(partition, map_partition("dr", "orders", 3));
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        fn entry_strategy() -> impl Strategy<Value = MapEntry> {
            (
                prop::collection::btree_set(any::<i64>().prop_map(|o| o >> 2), 1..20),
                ".{0,12}",
                any::<i32>(),
                any::<i64>(),
                any::<bool>(),
                0..3i64,
            )
                .prop_map(
                    |(offsets, topic, partition, dest_first, consecutive, past)| {
                        let offsets: Vec<i64> = offsets.into_iter().collect();
                        let mut entry = MapEntry::from_offsets(
                            &offsets,
                            &topic,
                            partition,
                            dest_first,
                            consecutive,
                        )
                        .unwrap();
                        entry.next_offset += past;
                        entry
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_the_map_decoders(
                body in prop::collection::vec(any::<u8>(), 0..160),
            ) {
                let mut versioned = vec![VERSION];
                versioned.extend_from_slice(&body);
                for bytes in [&body, &versioned] {
                    let _ = MapKey::decode(bytes);
                    if let Ok(entry) = MapEntry::decode(bytes) {
                        let _ = translate(&[entry], 0);
                    }
                }
            }

            #[test]
            fn map_keys_and_entries_round_trip(
                flow in ".{0,16}",
                topic in ".{0,16}",
                partition in any::<i32>(),
                first_offset in any::<i64>(),
                entry in entry_strategy(),
            ) {
                let key = MapKey { flow, topic, partition, first_offset };
                prop_assert_eq!(MapKey::decode(&key.encode()), Ok(key));
                prop_assert_eq!(MapEntry::decode(&entry.encode()), Ok(entry));
            }

            #[test]
            fn damaged_map_entries_are_typed_errors_never_panics(
                entry in entry_strategy(),
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
                run_start in prop_oneof![Just(i64::MAX), Just(i64::MIN), any::<i64>()],
            ) {
                let bytes = entry.encode();
                let cut = cut.index(bytes.len());
                prop_assert!(
                    matches!(MapEntry::decode(&bytes[..cut]), Err(MapDecodeError::Truncated { .. })),
                    "cut at {}", cut
                );
                let mut damaged = bytes.clone();
                for (at, byte) in damage {
                    let at = at.index(damaged.len());
                    damaged[at] = byte;
                }
                if let Ok(decoded) = MapEntry::decode(&damaged) {
                    let _ = translate(&[decoded], entry.last_offset);
                }
                // A run starting anywhere, the last one included.
                let mut moved = entry.clone();
                let last = moved.runs.len() - 1;
                moved.runs[last].0 = run_start;
                if let Ok(decoded) = MapEntry::decode(&moved.encode()) {
                    let _ = translate(&[decoded], run_start);
                }
            }
        }
    }
}
