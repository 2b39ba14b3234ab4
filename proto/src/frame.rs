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
//!
//! On a slow or metered network a batch can go compressed instead ([`Compression`],
//! gRPC's `zstd` encoding): the whole message compressed, with the gRPC prefix's
//! compressed flag set.
#![forbid(unsafe_code)]

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;

use crate::v1::Batch;

/// Field number of `Batch.records` in `replicate.proto`.
const RECORDS_FIELD: u32 = 7;
/// The gRPC length prefix: a compression flag byte and a big-endian u32 length.
pub const GRPC_PREFIX_BYTES: usize = 5;
/// Largest `Replicate` message either end accepts: a batch of a few MiB plus
/// headroom (the fetcher's encoder and the writer's decoder share it).
pub const MAX_BATCH_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The HTTP/2 path of the `Writer.Replicate` call.
pub const REPLICATE_PATH: &str = "/kmirror.v1.Writer/Replicate";
/// The request header naming a stream's [`Compression`].
pub const GRPC_ENCODING_HEADER: &str = "grpc-encoding";

/// Appends the gRPC length prefix of a message of `len` bytes.
pub fn put_grpc_prefix(dst: &mut BytesMut, compressed: bool, len: u32) {
    dst.put_u8(u8::from(compressed));
    dst.put_u32(len);
}

/// zstd level of compressed batch messages: the fastest, which still shrinks
/// typical records several times.
const ZSTD_LEVEL: i32 = 1;

/// How batch messages are compressed on the hop (gRPC's `grpc-encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed: the records cross as they were packed.
    #[default]
    Identity,
    Zstd,
}

impl Compression {
    /// The `grpc-encoding` header value naming it.
    pub fn grpc_encoding(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Zstd => "zstd",
        }
    }

    /// The compression a `grpc-encoding` value names, if it is one of these.
    pub fn from_grpc_encoding(name: &str) -> Option<Self> {
        match name {
            "identity" => Some(Compression::Identity),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Decompresses the body of a message whose compressed flag is set, allowing
    /// at most `max_message_bytes` once decompressed.
    pub fn decompress(self, data: &[u8], max_message_bytes: usize) -> Result<Bytes, FrameError> {
        match self {
            Compression::Identity => Err(FrameError::NotCompressed),
            Compression::Zstd => {
                let size = match zstd::zstd_safe::get_frame_content_size(data) {
                    Ok(Some(size)) => usize::try_from(size).unwrap_or(usize::MAX),
                    Ok(None) => {
                        return Err(FrameError::Corrupt(
                            "zstd frame without its content size".into(),
                        ))
                    }
                    Err(_) => return Err(FrameError::Corrupt("not a zstd frame".into())),
                };
                if size > max_message_bytes {
                    return Err(FrameError::TooLarge {
                        size,
                        limit: max_message_bytes,
                    });
                }
                zstd::bulk::decompress(data, size)
                    .map(Bytes::from)
                    .map_err(|error| FrameError::Corrupt(error.to_string()))
            }
        }
    }
}

/// Why a batch message cannot be framed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("batch message of {size} bytes is larger than the {limit} bytes a message may have")]
    TooLarge { size: usize, limit: usize },
    #[error("compressed batch message on a stream whose grpc-encoding is identity")]
    NotCompressed,
    #[error("compressed batch message cannot be decompressed: {0}")]
    Corrupt(String),
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
    /// Frames `batch` as a gRPC message of at most `max_message_bytes` (before
    /// compression), compressed as `compression` says.
    pub fn encode(
        batch: Batch,
        max_message_bytes: usize,
        compression: Compression,
    ) -> Result<Self, FrameError> {
        match compression {
            Compression::Identity => Self::encode_identity(batch, max_message_bytes),
            Compression::Zstd => Self::encode_zstd(&batch, max_message_bytes),
        }
    }

    fn encode_identity(mut batch: Batch, max_message_bytes: usize) -> Result<Self, FrameError> {
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
            return Err(FrameError::TooLarge {
                size: message_len,
                limit,
            });
        }
        let mut head = BytesMut::with_capacity(
            GRPC_PREFIX_BYTES + fields_len + records_field_len - records.len(),
        );
        put_grpc_prefix(&mut head, false, message_len as u32);
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

    /// The whole message compressed into `head` (compressing copies it anyway).
    fn encode_zstd(batch: &Batch, max_message_bytes: usize) -> Result<Self, FrameError> {
        let message_len = batch.encoded_len();
        let limit = max_message_bytes.min(u32::MAX as usize);
        if message_len > limit {
            return Err(FrameError::TooLarge {
                size: message_len,
                limit,
            });
        }
        let message = batch.encode_to_vec();
        let compressed = zstd::bulk::compress(&message, ZSTD_LEVEL)
            .map_err(|error| FrameError::Corrupt(error.to_string()))?;
        let mut head = BytesMut::with_capacity(GRPC_PREFIX_BYTES + compressed.len());
        let compressed_len = u32::try_from(compressed.len()).map_err(|_| FrameError::TooLarge {
            size: compressed.len(),
            limit,
        })?;
        put_grpc_prefix(&mut head, true, compressed_len);
        head.put_slice(&compressed);
        Ok(Self {
            head: head.freeze(),
            records: Bytes::new(),
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
            read_from: Some(38),
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
            let frame =
                BatchFrame::encode(batch.clone(), usize::MAX, Compression::Identity).unwrap();
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
        let frame = BatchFrame::encode(batch.clone(), usize::MAX, Compression::Identity).unwrap();
        assert!(frame.records.is_empty());
        assert_eq!(message_of(&frame), batch.encode_to_vec());
    }

    #[test]
    fn frame_larger_than_the_limit_is_refused_with_its_size() {
        let batch = batch(10);
        let size = batch.encoded_len();
        for compression in [Compression::Identity, Compression::Zstd] {
            assert_eq!(
                BatchFrame::encode(batch.clone(), size - 1, compression).unwrap_err(),
                FrameError::TooLarge {
                    size,
                    limit: size - 1
                }
            );
        }
        assert_eq!(
            BatchFrame::encode(batch, size, Compression::Identity)
                .unwrap()
                .len(),
            size + GRPC_PREFIX_BYTES
        );
    }

    #[test]
    fn zstd_frame_is_flagged_compressed_and_decompresses_to_the_batch() {
        let batch = batch(1_000);
        let frame = BatchFrame::encode(batch.clone(), usize::MAX, Compression::Zstd).unwrap();
        assert!(frame.records.is_empty());
        assert_eq!(frame.head[0], 1, "compressed flag");
        let length = u32::from_be_bytes(frame.head[1..GRPC_PREFIX_BYTES].try_into().unwrap());
        assert_eq!(length as usize, frame.head.len() - GRPC_PREFIX_BYTES);
        assert!(
            frame.len() < batch.encoded_len() / 4,
            "{} bytes",
            frame.len()
        );
        let body = &frame.head[GRPC_PREFIX_BYTES..];
        let message = Compression::Zstd.decompress(body, usize::MAX).unwrap();
        assert_eq!(Batch::decode(message).unwrap(), batch);

        let size = batch.encoded_len();
        assert_eq!(
            Compression::Zstd.decompress(body, size - 1).unwrap_err(),
            FrameError::TooLarge {
                size,
                limit: size - 1
            }
        );
        assert_eq!(
            Compression::Identity
                .decompress(body, usize::MAX)
                .unwrap_err(),
            FrameError::NotCompressed
        );
        assert!(matches!(
            Compression::Zstd.decompress(&body[..body.len() / 2], usize::MAX),
            Err(FrameError::Corrupt(_))
        ));
        assert!(matches!(
            Compression::Zstd.decompress(b"not zstd at all", usize::MAX),
            Err(FrameError::Corrupt(_))
        ));
    }

    #[test]
    fn grpc_encodings_name_the_compressions() {
        for compression in [Compression::Identity, Compression::Zstd] {
            assert_eq!(
                Compression::from_grpc_encoding(compression.grpc_encoding()),
                Some(compression)
            );
        }
        assert_eq!(Compression::from_grpc_encoding("gzip"), None);
    }

    mod generated {
        use proptest::prelude::*;

        use super::*;

        /// A batch of `record_count` records with values of `value_len` bytes.
        fn sized_batch(record_count: usize, value_len: usize, seq: u64) -> Batch {
            let mut batch = batch(record_count);
            if value_len != 300 {
                let mut builder = PackedBuilder::default();
                for index in 0..record_count {
                    let value = vec![index as u8; value_len];
                    builder
                        .push(index as i64, None, Some(&value), NO_HEADERS, None)
                        .unwrap();
                }
                batch.set_packed(builder.finish());
                batch.next_offset = record_count as i64;
            }
            batch.seq = seq;
            batch
        }

        /// The message of a frame (prefix checked), decompressed when flagged.
        fn message_bytes(
            frame: &BatchFrame,
            compression: Compression,
        ) -> Result<Bytes, FrameError> {
            let mut wire = frame.head.to_vec();
            wire.extend_from_slice(&frame.records);
            let body = Bytes::from(wire.split_off(GRPC_PREFIX_BYTES));
            if wire[0] == 1 {
                compression.decompress(&body, 1 << 20)
            } else {
                Ok(body)
            }
        }

        use crate::packed::NO_HEADERS;

        fn compression() -> impl Strategy<Value = Compression> {
            prop_oneof![Just(Compression::Identity), Just(Compression::Zstd)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_the_frame_decoder(
                data in prop::collection::vec(any::<u8>(), 0..512),
                zstd_magic in any::<bool>(),
                limit in prop_oneof![Just(usize::MAX), 0..4096usize],
            ) {
                let mut data = data;
                if zstd_magic {
                    // Past the magic number, into the frame header's parsing.
                    data.splice(0..0, [0x28, 0xb5, 0x2f, 0xfd]);
                }
                match Compression::Zstd.decompress(&data, limit.min(1 << 20)) {
                    Ok(message) => {
                        prop_assert!(message.len() <= limit.min(1 << 20));
                        let _ = Batch::decode(message).map(|batch| batch.packed().validate());
                    }
                    Err(FrameError::TooLarge { size, limit: told }) => prop_assert!(size > told),
                    Err(FrameError::Corrupt(_)) => {}
                    Err(other) => prop_assert!(false, "unexpected {:?}", other),
                }
                prop_assert_eq!(
                    Compression::Identity.decompress(&data, usize::MAX),
                    Err(FrameError::NotCompressed)
                );
                if let Ok(batch) = Batch::decode(data.as_slice()) {
                    let _ = batch.packed().validate();
                }
            }

            #[test]
            fn valid_frames_round_trip_in_either_compression(
                record_count in 0..40usize,
                value_len in prop_oneof![Just(300usize), 0..64usize],
                seq in any::<u64>(),
                compression in compression(),
            ) {
                let batch = sized_batch(record_count, value_len, seq);
                let frame = BatchFrame::encode(batch.clone(), usize::MAX, compression).unwrap();
                let length = u32::from_be_bytes(frame.head[1..GRPC_PREFIX_BYTES].try_into().unwrap());
                prop_assert_eq!(length as usize, frame.len() - GRPC_PREFIX_BYTES);
                let decoded = Batch::decode(message_bytes(&frame, compression).unwrap()).unwrap();
                prop_assert!(decoded.packed().validate().is_ok());
                prop_assert_eq!(decoded, batch);
            }

            #[test]
            fn corrupted_or_truncated_frames_give_typed_errors_never_panics(
                record_count in 0..20usize,
                compression in compression(),
                cut in any::<prop::sample::Index>(),
                damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            ) {
                let batch = sized_batch(record_count, 300, 1);
                let frame = BatchFrame::encode(batch, usize::MAX, compression).unwrap();
                let mut body = frame.head[GRPC_PREFIX_BYTES..].to_vec();
                body.extend_from_slice(&frame.records);
                let mut damaged = body.clone();
                for (at, byte) in damage {
                    let at = at.index(damaged.len());
                    damaged[at] = byte;
                }
                let cut = cut.index(body.len() + 1);
                for message in [&body[..cut], &damaged[..]] {
                    let decoded = match compression {
                        Compression::Zstd => match compression.decompress(message, 1 << 20) {
                            Ok(bytes) => bytes,
                            Err(FrameError::Corrupt(_) | FrameError::TooLarge { .. }) => continue,
                            Err(other) => {
                                prop_assert!(false, "unexpected {:?}", other);
                                unreachable!()
                            }
                        },
                        Compression::Identity => Bytes::copy_from_slice(message),
                    };
                    if let Ok(batch) = Batch::decode(decoded) {
                        let _ = batch.packed().validate();
                    }
                }
                // A cut zstd frame never decompresses.
                if compression == Compression::Zstd && cut < body.len() {
                    prop_assert!(compression.decompress(&body[..cut], 1 << 20).is_err());
                }
            }
        }
    }
}
