//! The packed record layout of `Batch.records`: every record of a batch back to
//! back in one byte string (the layout is specified beside `Batch` in
//! `proto/kmirror/v1/replicate.proto`).
//!
//! [`PackedBuilder`] appends records from borrowed parts into one buffer, so
//! gathering a batch allocates nothing per record. [`PackedRecords`] reads them back
//! as slices of the received message: nothing is copied or allocated per record.
//! Reading never panics: whatever is malformed is reported as a [`MalformedBatch`]
//! naming the record and the field.
#![forbid(unsafe_code)]

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::v1::Batch;

/// Version byte at the start of every packed record string.
pub const LAYOUT_VERSION: u8 = 1;

/// Attribute bit: the record has a timestamp.
const HAS_TIMESTAMP: u8 = 0x01;
const KNOWN_ATTRIBUTES: u8 = HAS_TIMESTAMP;

/// Longest LEB128 encoding of a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// Figures of a batch's records, taken while building or validating it so that
/// nobody needs to walk the records again for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedSummary {
    pub record_count: u32,
    pub first_offset: Option<i64>,
    pub last_offset: Option<i64>,
    /// Bytes of the records' keys and values.
    pub key_value_bytes: u64,
    /// Bytes of the records' header keys and values.
    pub header_bytes: u64,
    pub oldest_timestamp_ms: Option<i64>,
    pub newest_timestamp_ms: Option<i64>,
}

impl PackedSummary {
    /// Bytes of the records' keys, values and headers.
    pub fn data_bytes(&self) -> u64 {
        self.key_value_bytes + self.header_bytes
    }

    fn add(
        &mut self,
        offset: i64,
        key_value_bytes: usize,
        header_bytes: usize,
        timestamp_ms: Option<i64>,
    ) {
        self.record_count += 1;
        self.first_offset.get_or_insert(offset);
        self.last_offset = Some(offset);
        self.key_value_bytes += key_value_bytes as u64;
        self.header_bytes += header_bytes as u64;
        if let Some(timestamp_ms) = timestamp_ms {
            self.oldest_timestamp_ms = Some(
                self.oldest_timestamp_ms
                    .map_or(timestamp_ms, |oldest| oldest.min(timestamp_ms)),
            );
            self.newest_timestamp_ms = Some(
                self.newest_timestamp_ms
                    .map_or(timestamp_ms, |newest| newest.max(timestamp_ms)),
            );
        }
    }
}

/// Why a record could not be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("offset {offset} does not follow offset {previous} of the batch")]
    OffsetNotIncreasing { offset: i64, previous: i64 },
    #[error("the batch already holds the most records a batch can count")]
    TooManyRecords,
}

/// The packed records of a finished batch and what `Batch` carries beside them.
#[derive(Debug, Clone, Default)]
pub struct PackedBatch {
    pub records: Bytes,
    pub base_offset: i64,
    pub record_count: u32,
    pub summary: PackedSummary,
}

/// The headers of a record that has none, for [`PackedBuilder::push`].
pub const NO_HEADERS: [(&str, Option<&[u8]>); 0] = [];

/// Appends records to one buffer in the packed layout.
#[derive(Debug)]
pub struct PackedBuilder {
    buffer: BytesMut,
    base_offset: i64,
    previous_timestamp_ms: i64,
    summary: PackedSummary,
}

impl Default for PackedBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl PackedBuilder {
    /// A builder whose buffer starts with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buffer = BytesMut::with_capacity(capacity.max(1));
        buffer.extend_from_slice(&[LAYOUT_VERSION]);
        Self {
            buffer,
            base_offset: 0,
            previous_timestamp_ms: 0,
            summary: PackedSummary::default(),
        }
    }

    /// Appends a record. Its offset must be above the previous record's.
    pub fn push<'h, K: AsRef<str>>(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (K, Option<&'h [u8]>)>,
        timestamp_ms: Option<i64>,
    ) -> Result<(), PushError> {
        match self.summary.last_offset {
            None => self.base_offset = offset,
            Some(previous) if offset <= previous => {
                return Err(PushError::OffsetNotIncreasing { offset, previous })
            }
            Some(_) => {}
        }
        if self.summary.record_count == u32::MAX {
            return Err(PushError::TooManyRecords);
        }
        let key_len = key.map_or(0, <[u8]>::len);
        let value_len = value.map_or(0, <[u8]>::len);
        self.buffer
            .reserve(1 + 4 * MAX_VARINT_BYTES + key_len + value_len);
        let attributes = if timestamp_ms.is_some() {
            HAS_TIMESTAMP
        } else {
            0
        };
        self.buffer.extend_from_slice(&[attributes]);
        // Non-negative: offsets only grow from the base.
        put_varint(
            &mut self.buffer,
            offset.wrapping_sub(self.base_offset) as u64,
        );
        if let Some(timestamp_ms) = timestamp_ms {
            let delta = timestamp_ms.wrapping_sub(self.previous_timestamp_ms);
            put_varint(&mut self.buffer, zigzag(delta));
            self.previous_timestamp_ms = timestamp_ms;
        }
        put_nullable(&mut self.buffer, key);
        put_nullable(&mut self.buffer, value);
        let header_bytes = self.put_headers(headers);
        self.summary
            .add(offset, key_len + value_len, header_bytes, timestamp_ms);
        Ok(())
    }

    /// Writes the header count and the headers; returns their bytes. The count
    /// precedes the headers but is known only after them: one byte is set aside
    /// for it, and the headers move to make room when it needs more (128 headers
    /// or more).
    fn put_headers<'h, K: AsRef<str>>(
        &mut self,
        headers: impl IntoIterator<Item = (K, Option<&'h [u8]>)>,
    ) -> usize {
        let count_at = self.buffer.len();
        self.buffer.extend_from_slice(&[0]);
        let mut count: u64 = 0;
        let mut bytes = 0;
        for (key, value) in headers {
            let key = key.as_ref();
            let value_len = value.map_or(0, <[u8]>::len);
            self.buffer
                .reserve(2 * MAX_VARINT_BYTES + key.len() + value_len);
            put_varint(&mut self.buffer, key.len() as u64);
            self.buffer.extend_from_slice(key.as_bytes());
            put_nullable(&mut self.buffer, value);
            count += 1;
            bytes += key.len() + value_len;
        }
        let mut encoded = [0; MAX_VARINT_BYTES];
        let count_len = encode_varint(count, &mut encoded);
        if count_len > 1 {
            let end = self.buffer.len();
            self.buffer.resize(end + count_len - 1, 0);
            self.buffer
                .copy_within(count_at + 1..end, count_at + count_len);
        }
        self.buffer[count_at..count_at + count_len].copy_from_slice(&encoded[..count_len]);
        bytes
    }

    pub fn record_count(&self) -> u32 {
        self.summary.record_count
    }

    pub fn is_empty(&self) -> bool {
        self.summary.record_count == 0
    }

    /// Bytes of the packed records so far (what the batch's `records` field holds).
    pub fn encoded_len(&self) -> usize {
        self.buffer.len()
    }

    /// Makes room for at least `additional` more bytes at once, so that records
    /// known to be coming are packed without the buffer growing (and copying
    /// what it holds) step by step.
    pub fn reserve(&mut self, additional: usize) {
        self.buffer.reserve(additional);
    }

    pub fn summary(&self) -> &PackedSummary {
        &self.summary
    }

    /// Bytes the buffer has allocated, used or not: what the batch holds in
    /// memory until it is dropped (`finish` keeps the allocation as it is).
    pub fn capacity(&self) -> usize {
        self.buffer.capacity()
    }

    pub fn finish(self) -> PackedBatch {
        PackedBatch {
            records: self.buffer.freeze(),
            base_offset: self.base_offset,
            record_count: self.summary.record_count,
            summary: self.summary,
        }
    }
}

/// A packed record string is not in the layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedBatch {
    #[error("the packed records are empty (not even the layout version byte)")]
    MissingVersion,
    #[error("the packed records have layout version {0}; version {LAYOUT_VERSION} is understood")]
    UnsupportedVersion(u8),
    #[error("the packed records hold {found} records where the batch declares {declared}")]
    MissingRecords { declared: u32, found: u32 },
    #[error("{extra} bytes follow the last of the {declared} records the batch declares")]
    TrailingBytes { declared: u32, extra: usize },
    #[error("record {index}: {problem}")]
    Record { index: u32, problem: RecordProblem },
}

/// What is wrong in one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    #[error("its {0} is cut off by the end of the packed records")]
    Truncated(RecordField),
    #[error("its {0} is not a valid varint")]
    BadVarint(RecordField),
    #[error("its {field} claims {claimed} bytes where {remaining} remain")]
    TooLong {
        field: RecordField,
        claimed: u64,
        remaining: usize,
    },
    #[error("reserved attribute bits are set ({0:#04x})")]
    ReservedAttributes(u8),
    #[error("its offset delta {delta} overflows the base offset {base_offset}")]
    OffsetOverflow { delta: u64, base_offset: i64 },
    #[error("its offset {offset} does not follow offset {previous}")]
    OffsetNotIncreasing { offset: i64, previous: i64 },
    #[error("it claims {claimed} headers where {remaining} bytes remain")]
    TooManyHeaders { claimed: u64, remaining: usize },
    #[error("the key of header {0} is not UTF-8")]
    HeaderKeyNotUtf8(u32),
}

/// A field of a packed record, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordField {
    Attributes,
    OffsetDelta,
    Timestamp,
    Key,
    Value,
    HeaderCount,
    HeaderKey(u32),
    HeaderValue(u32),
}

impl fmt::Display for RecordField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attributes => formatter.write_str("attributes"),
            Self::OffsetDelta => formatter.write_str("offset delta"),
            Self::Timestamp => formatter.write_str("timestamp"),
            Self::Key => formatter.write_str("key"),
            Self::Value => formatter.write_str("value"),
            Self::HeaderCount => formatter.write_str("header count"),
            Self::HeaderKey(index) => write!(formatter, "header {index} key"),
            Self::HeaderValue(index) => write!(formatter, "header {index} value"),
        }
    }
}

/// The packed records of a batch, read in place.
#[derive(Debug, Clone, Copy)]
pub struct PackedRecords<'a> {
    data: &'a [u8],
    base_offset: i64,
    record_count: u32,
}

impl Batch {
    /// The batch's records (not validated yet: see [`PackedRecords::validate`]).
    pub fn packed(&self) -> PackedRecords<'_> {
        PackedRecords::new(&self.records, self.base_offset, self.record_count)
    }

    /// Puts packed records in the batch.
    pub fn set_packed(&mut self, packed: PackedBatch) {
        self.records = packed.records;
        self.base_offset = packed.base_offset;
        self.record_count = packed.record_count;
    }
}

impl<'a> PackedRecords<'a> {
    pub fn new(data: &'a [u8], base_offset: i64, record_count: u32) -> Self {
        Self {
            data,
            base_offset,
            record_count,
        }
    }

    /// The record count the batch declares.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Records in order; after an error, nothing more.
    pub fn iter(&self) -> PackedIter<'a> {
        PackedIter {
            data: self.data,
            position: 0,
            base_offset: self.base_offset,
            declared: self.record_count,
            index: 0,
            previous_offset: None,
            previous_timestamp_ms: 0,
            done: false,
            header_keys_checked: false,
        }
    }

    /// Records in order, of records that [`PackedRecords::validate`] accepted:
    /// reading a record skips its header keys' UTF-8 check, which the headers'
    /// iterator makes anyway (the layout is still checked, and reading still never
    /// panics).
    pub fn iter_validated(&self) -> PackedIter<'a> {
        PackedIter {
            header_keys_checked: true,
            ..self.iter()
        }
    }

    /// Reads every record once: the batch's figures if all of it is in the layout
    /// (the declared count, nothing after the last record), else what is wrong.
    pub fn validate(&self) -> Result<PackedSummary, MalformedBatch> {
        let mut summary = PackedSummary::default();
        for record in self.iter() {
            let record = record?;
            summary.add(
                record.offset,
                record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len),
                record.header_bytes,
                record.timestamp_ms,
            );
        }
        Ok(summary)
    }
}

impl<'a> IntoIterator for PackedRecords<'a> {
    type Item = Result<PackedRecord<'a>, MalformedBatch>;
    type IntoIter = PackedIter<'a>;

    fn into_iter(self) -> PackedIter<'a> {
        self.iter()
    }
}

/// One record, its key, value and headers borrowed from the packed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedRecord<'a> {
    pub offset: i64,
    /// Null differs from empty.
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Milliseconds since the epoch; `None` when the source record had none.
    pub timestamp_ms: Option<i64>,
    headers: PackedHeaders<'a>,
    header_bytes: usize,
}

impl<'a> PackedRecord<'a> {
    /// The headers in order.
    pub fn headers(&self) -> PackedHeaders<'a> {
        self.headers
    }

    pub fn header_count(&self) -> usize {
        self.headers.remaining as usize
    }

    /// Bytes of the header keys and values.
    pub fn header_bytes(&self) -> usize {
        self.header_bytes
    }

    /// Bytes of the key, value and headers.
    pub fn data_bytes(&self) -> usize {
        self.key.map_or(0, <[u8]>::len) + self.value.map_or(0, <[u8]>::len) + self.header_bytes
    }
}

/// A record header: its key is UTF-8, its value may be null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedHeader<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
}

/// The headers of a record, already checked when the record was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedHeaders<'a> {
    data: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for PackedHeaders<'a> {
    type Item = PackedHeader<'a>;

    fn next(&mut self) -> Option<PackedHeader<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // The record was validated when read, so this cannot fail; should it, the
        // headers simply end.
        let mut cursor = Cursor {
            data: self.data,
            position: 0,
        };
        let header = read_header(&mut cursor, 0).ok()?;
        self.data = &self.data[cursor.position..];
        self.remaining -= 1;
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

impl ExactSizeIterator for PackedHeaders<'_> {}

/// Reads the records of a [`PackedRecords`] one at a time.
#[derive(Debug, Clone)]
pub struct PackedIter<'a> {
    data: &'a [u8],
    position: usize,
    base_offset: i64,
    declared: u32,
    index: u32,
    previous_offset: Option<i64>,
    previous_timestamp_ms: i64,
    done: bool,
    /// Set by [`PackedRecords::iter_validated`].
    header_keys_checked: bool,
}

impl<'a> PackedIter<'a> {
    fn read_record(&mut self) -> Result<PackedRecord<'a>, RecordProblem> {
        let mut cursor = Cursor {
            data: self.data,
            position: self.position,
        };
        let attributes = cursor.byte(RecordField::Attributes)?;
        if attributes & !KNOWN_ATTRIBUTES != 0 {
            return Err(RecordProblem::ReservedAttributes(
                attributes & !KNOWN_ATTRIBUTES,
            ));
        }
        let delta = cursor.varint(RecordField::OffsetDelta)?;
        let offset = i64::try_from(delta)
            .ok()
            .and_then(|delta| self.base_offset.checked_add(delta))
            .ok_or(RecordProblem::OffsetOverflow {
                delta,
                base_offset: self.base_offset,
            })?;
        if let Some(previous) = self.previous_offset {
            if offset <= previous {
                return Err(RecordProblem::OffsetNotIncreasing { offset, previous });
            }
        }
        let timestamp_ms = if attributes & HAS_TIMESTAMP != 0 {
            let delta = unzigzag(cursor.varint(RecordField::Timestamp)?);
            Some(self.previous_timestamp_ms.wrapping_add(delta))
        } else {
            None
        };
        let key = cursor.nullable(RecordField::Key)?;
        let value = cursor.nullable(RecordField::Value)?;
        let claimed = cursor.varint(RecordField::HeaderCount)?;
        // A header takes two bytes at least: a larger count cannot be right, and
        // fits in a u32 whenever it can.
        let remaining = cursor.remaining();
        let header_count = u32::try_from(claimed)
            .ok()
            .filter(|count| *count as usize <= remaining / 2)
            .ok_or(RecordProblem::TooManyHeaders { claimed, remaining })?;
        let headers_start = cursor.position;
        let mut header_bytes = 0;
        for index in 0..header_count {
            header_bytes += if self.header_keys_checked {
                skip_header(&mut cursor, index)?
            } else {
                let header = read_header(&mut cursor, index)?;
                header.key.len() + header.value.map_or(0, <[u8]>::len)
            };
        }
        let headers = PackedHeaders {
            data: &self.data[headers_start..cursor.position],
            remaining: header_count,
        };
        self.position = cursor.position;
        self.previous_offset = Some(offset);
        if let Some(timestamp_ms) = timestamp_ms {
            self.previous_timestamp_ms = timestamp_ms;
        }
        Ok(PackedRecord {
            offset,
            key,
            value,
            timestamp_ms,
            headers,
            header_bytes,
        })
    }
}

impl<'a> Iterator for PackedIter<'a> {
    type Item = Result<PackedRecord<'a>, MalformedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.position == 0 {
            match self.data.first() {
                None => return self.fail(MalformedBatch::MissingVersion),
                Some(&LAYOUT_VERSION) => self.position = 1,
                Some(&version) => return self.fail(MalformedBatch::UnsupportedVersion(version)),
            }
        }
        let remaining = self.data.len() - self.position;
        if self.index == self.declared {
            self.done = true;
            if remaining > 0 {
                return Some(Err(MalformedBatch::TrailingBytes {
                    declared: self.declared,
                    extra: remaining,
                }));
            }
            return None;
        }
        if remaining == 0 {
            return self.fail(MalformedBatch::MissingRecords {
                declared: self.declared,
                found: self.index,
            });
        }
        match self.read_record() {
            Ok(record) => {
                self.index += 1;
                Some(Ok(record))
            }
            Err(problem) => self.fail(MalformedBatch::Record {
                index: self.index,
                problem,
            }),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            return (0, Some(0));
        }
        // One more for a trailing error.
        let left = (self.declared - self.index) as usize;
        (0, Some(left + 1))
    }
}

impl<'a> PackedIter<'a> {
    fn fail(
        &mut self,
        malformed: MalformedBatch,
    ) -> Option<Result<PackedRecord<'a>, MalformedBatch>> {
        self.done = true;
        Some(Err(malformed))
    }
}

fn read_header<'a>(cursor: &mut Cursor<'a>, index: u32) -> Result<PackedHeader<'a>, RecordProblem> {
    let (key, value) = read_header_bytes(cursor, index)?;
    let key = std::str::from_utf8(key).map_err(|_| RecordProblem::HeaderKeyNotUtf8(index))?;
    Ok(PackedHeader { key, value })
}

/// Steps over a header whose key was checked before; returns its bytes.
fn skip_header(cursor: &mut Cursor<'_>, index: u32) -> Result<usize, RecordProblem> {
    let (key, value) = read_header_bytes(cursor, index)?;
    Ok(key.len() + value.map_or(0, <[u8]>::len))
}

/// A header's key and value as they are in the layout.
fn read_header_bytes<'a>(
    cursor: &mut Cursor<'a>,
    index: u32,
) -> Result<(&'a [u8], Option<&'a [u8]>), RecordProblem> {
    let key_len = cursor.varint(RecordField::HeaderKey(index))?;
    let key = cursor.bytes(key_len, RecordField::HeaderKey(index))?;
    let value = cursor.nullable(RecordField::HeaderValue(index))?;
    Ok((key, value))
}

struct Cursor<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.position
    }

    fn byte(&mut self, field: RecordField) -> Result<u8, RecordProblem> {
        let byte = *self
            .data
            .get(self.position)
            .ok_or(RecordProblem::Truncated(field))?;
        self.position += 1;
        Ok(byte)
    }

    fn varint(&mut self, field: RecordField) -> Result<u64, RecordProblem> {
        let first = self.byte(field)?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let mut value = u64::from(first & 0x7f);
        for shift in (7..64).step_by(7) {
            let byte = self.byte(field)?;
            // The tenth byte holds the 64th bit only.
            if shift == 63 && byte > 1 {
                return Err(RecordProblem::BadVarint(field));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(RecordProblem::BadVarint(field))
    }

    fn bytes(&mut self, length: u64, field: RecordField) -> Result<&'a [u8], RecordProblem> {
        let remaining = self.remaining();
        let length = usize::try_from(length)
            .ok()
            .filter(|length| *length <= remaining)
            .ok_or(RecordProblem::TooLong {
                field,
                claimed: length,
                remaining,
            })?;
        let bytes = &self.data[self.position..self.position + length];
        self.position += length;
        Ok(bytes)
    }

    /// A length plus one (0: null) and that many bytes.
    fn nullable(&mut self, field: RecordField) -> Result<Option<&'a [u8]>, RecordProblem> {
        match self.varint(field)? {
            0 => Ok(None),
            length_plus_one => self.bytes(length_plus_one - 1, field).map(Some),
        }
    }
}

fn encode_varint(mut value: u64, out: &mut [u8; MAX_VARINT_BYTES]) -> usize {
    let mut length = 0;
    while value >= 0x80 {
        out[length] = (value as u8) | 0x80;
        value >>= 7;
        length += 1;
    }
    out[length] = value as u8;
    length + 1
}

fn put_varint(buffer: &mut BytesMut, value: u64) {
    if value < 0x80 {
        buffer.extend_from_slice(&[value as u8]);
        return;
    }
    let mut encoded = [0; MAX_VARINT_BYTES];
    let length = encode_varint(value, &mut encoded);
    buffer.extend_from_slice(&encoded[..length]);
}

fn put_nullable(buffer: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buffer, 0),
        Some(bytes) => {
            put_varint(buffer, bytes.len() as u64 + 1);
            buffer.extend_from_slice(bytes);
        }
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests;
