//! A [`Batch`] as one length-prefixed gRPC message, in two pieces: the message
//! without its records, and the packed records themselves, which are shared with
//! the batch rather than copied.
//!
//! tonic's codec encodes every message into a buffer of its own, which for a batch
//! means copying all of its records once more on the way to HTTP/2. The fetcher
//! instead sends [`BatchFrame::head`] and [`BatchFrame::records`] as two chunks of
//! the request body; HTTP/2 writes a large chunk to the socket as it is. The bytes
//! on the wire are an ordinary protobuf `Batch` (its records field last), which
//! any gRPC server decodes as usual.
#![forbid(unsafe_code)]

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use crate::v1::Batch;

/// Field number of `Batch.records` in `replicate.proto`.
const RECORDS_FIELD: u32 = 7;
/// The gRPC length prefix: a compression flag byte and a big-endian u32 length.
pub const GRPC_PREFIX_BYTES: usize = 5;

/// Why a batch cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("batch message of {size} bytes is larger than the {limit} bytes a message may have")]
pub struct FrameTooLarge {
    pub size: usize,
    pub limit: usize,
}

/// One batch as a gRPC message: `head` then `records`, back to back.
#[derive(Debug, Clone)]
pub struct BatchFrame {
    /// The gRPC prefix, every field of the batch but its records, and the records
    /// field's key and length.
    pub head: Bytes,
    /// The packed records (the batch's own bytes; empty when it has none).
    pub records: Bytes,
}

impl BatchFrame {
    /// Frames `batch` as an uncompressed gRPC message of at most `max_message_bytes`.
    pub fn encode(mut batch: Batch, max_message_bytes: usize) -> Result<Self, FrameTooLarge> {
        let records = std::mem::take(&mut batch.records);
        let fields_len = batch.encoded_len();
        let records_field_len = if records.is_empty() {
            0
        } else {
            key_len(RECORDS_FIELD) + encoded_len_varint(records.len() as u64) + records.len()
        };
        let message_len = fields_len + records_field_len;
        let limit = max_message_bytes.min(u32::MAX as usize);
        if message_len > limit {
            return Err(FrameTooLarge {
                size: message_len,
                limit,
            });
        }
        let mut head = BytesMut::with_capacity(
            GRPC_PREFIX_BYTES + fields_len + records_field_len - records.len(),
        );
        head.put_u8(0);
        head.put_u32(message_len as u32);
        batch
            .encode(&mut head)
            .expect("the buffer was sized for the message");
        if !records.is_empty() {
            encode_key(RECORDS_FIELD, WireType::LengthDelimited, &mut head);
            encode_varint(records.len() as u64, &mut head);
        }
        Ok(Self {
            head: head.freeze(),
            records,
        })
    }

    /// Bytes of the whole gRPC message, prefix included.
    pub fn len(&self) -> usize {
        self.head.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::packed::PackedBuilder;
    use crate::v1::SourcePartition;

    fn batch(record_count: usize) -> Batch {
        let mut builder = PackedBuilder::default();
        for index in 0..record_count {
            let value = vec![index as u8; 300];
            builder
                .push(
                    40 + index as i64,
                    Some(b"key".as_slice()),
                    Some(&value),
                    [("seq", Some(b"12345678".as_slice()))],
                    Some(1_700_000_000_000 + index as i64),
                )
                .unwrap();
        }
        let packed = builder.finish();
        Batch {
            source: Some(SourcePartition {
                flow: "orders".into(),
                topic: "orders.eu".into(),
                partition: 3,
            }),
            dest_topic: "orders.eu".into(),
            epoch: 7,
            seq: 1_000_001,
            restart: true,
            next_offset: 40 + record_count as i64,
            records: packed.records,
            trace_context: HashMap::from([("traceparent".into(), "00-abc-def-01".into())]),
            source_partition_count: 12,
            dest_partition_count: 12,
            base_offset: packed.base_offset,
            record_count: packed.record_count,
        }
    }

    fn message_of(frame: &BatchFrame) -> Vec<u8> {
        let mut wire = frame.head.to_vec();
        wire.extend_from_slice(&frame.records);
        assert_eq!(wire[0], 0, "uncompressed");
        let length = u32::from_be_bytes(wire[1..GRPC_PREFIX_BYTES].try_into().unwrap());
        assert_eq!(length as usize, wire.len() - GRPC_PREFIX_BYTES);
        wire.split_off(GRPC_PREFIX_BYTES)
    }

    #[test]
    fn frame_decodes_as_the_batch_and_shares_its_records() {
        for record_count in [0, 1, 1_000] {
            let batch = batch(record_count);
            let frame = BatchFrame::encode(batch.clone(), usize::MAX).unwrap();
            assert_eq!(
                frame.records.as_ptr(),
                batch.records.as_ptr(),
                "records not copied"
            );
            let decoded = Batch::decode(message_of(&frame).as_slice()).unwrap();
            assert_eq!(decoded, batch, "{record_count} records");
        }
    }

    #[test]
    fn frame_without_records_is_the_message_alone() {
        let mut batch = batch(0);
        batch.records = Bytes::new();
        let frame = BatchFrame::encode(batch.clone(), usize::MAX).unwrap();
        assert!(frame.records.is_empty());
        assert_eq!(message_of(&frame), batch.encode_to_vec());
    }

    #[test]
    fn frame_larger_than_the_limit_is_refused_with_its_size() {
        let batch = batch(10);
        let size = batch.encoded_len();
        assert_eq!(
            BatchFrame::encode(batch.clone(), size - 1).unwrap_err(),
            FrameTooLarge {
                size,
                limit: size - 1
            }
        );
        assert_eq!(
            BatchFrame::encode(batch, size).unwrap().len(),
            size + GRPC_PREFIX_BYTES
        );
    }
}
