//! A fetched record as the batches take it, whichever queue it came from
//! (librdkafka's own message, or the batch call's raw one): offset, key, value,
//! headers and timestamp packed into a batch's buffer.

use kmirror_proto::packed::{PackedBuilder, PushError};
use rdkafka::message::{BorrowedMessage, Headers, Message, Timestamp};

use crate::batch_poll::RawMessage;

/// A fetched record, whichever queue it was taken from.
pub(super) trait SourceRecord {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    /// Appends the record (offset, key, value, headers, timestamp) to `packed`.
    fn pack_into(&self, packed: &mut PackedBuilder) -> Result<(), PushError>;
}

impl SourceRecord for BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }

    fn partition(&self) -> i32 {
        Message::partition(self)
    }

    fn offset(&self) -> i64 {
        Message::offset(self)
    }

    fn pack_into(&self, packed: &mut PackedBuilder) -> Result<(), PushError> {
        let timestamp_ms = match self.timestamp() {
            Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => Some(ms),
            Timestamp::NotAvailable => None,
        };
        let headers = Message::headers(self)
            .into_iter()
            .flat_map(|headers| headers.iter())
            .map(|header| (header.key, header.value));
        packed.push(
            Message::offset(self),
            self.key(),
            self.payload(),
            headers,
            timestamp_ms,
        )
    }
}

impl SourceRecord for RawMessage<'_> {
    fn topic(&self) -> &str {
        RawMessage::topic(self)
    }

    fn partition(&self) -> i32 {
        RawMessage::partition(self)
    }

    fn offset(&self) -> i64 {
        RawMessage::offset(self)
    }

    fn pack_into(&self, packed: &mut PackedBuilder) -> Result<(), PushError> {
        // Header keys are strings; one that is not UTF-8 is read as Kafka's Java
        // clients read it, with U+FFFD for each malformed sequence (a valid key is
        // borrowed, not copied).
        let headers = self
            .headers()
            .map(|(key, value)| (String::from_utf8_lossy(key), value));
        packed.push(
            self.offset(),
            self.key(),
            self.payload(),
            headers,
            self.timestamp_ms(),
        )
    }
}
