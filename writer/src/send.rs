//! Handing a batch's records to a destination producer, shared by the
//! at-least-once session and the exactly-once partitions.

use std::sync::Arc;
use std::time::Duration;

use kmirror_common::offset_map::{map_partition, MapEntry, MapKey};
use kmirror_common::{ClusterName, PartitionKey};
use kmirror_proto::v1::{Batch, ErrorKind, WriteError};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use crate::partitioner::PartitionMapping;
use crate::producer::{
    classify, record_batch_size_estimate, BatchTracker, DestinationProducer, FailureClass,
};
use crate::WriterShared;

/// Where a batch's records go.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub producer: &'a DestinationProducer,
    pub cluster: &'a ClusterName,
    /// The destination topic's `max.message.bytes`, when known.
    pub limit: Option<i64>,
    /// Records at lower source offsets are not produced.
    pub skip_below: i64,
}

/// Hands the batch's records to the producer in order, from `target.skip_below`
/// on (records before it are in the destination already). Returns how many it
/// handed over and why it stopped early, if it did; the records before that one
/// are produced.
pub async fn produce_records(
    shared: &WriterShared,
    target: &Target<'_>,
    batch: &Batch,
    partition: &PartitionKey,
    tracker: &Arc<BatchTracker>,
    map_runs: &mut Vec<(i64, u32)>,
) -> (usize, Option<WriteError>) {
    let mapping = PartitionMapping::new(
        partition.partition,
        batch.source_partition_count,
        batch.dest_partition_count,
    );
    // Re-partitioned records have no per-partition position to map.
    let mapped = matches!(mapping, PartitionMapping::Identity(_));
    let Target {
        producer,
        cluster,
        limit,
        skip_below,
    } = *target;
    // Offset after the last record handed to the producer.
    let mut produced_until_opt: Option<i64> = None;
    let mut produced = 0;
    for record in batch.packed().iter_validated() {
        let record = match record {
            Ok(record) => record,
            // The batch was validated when it arrived: this cannot happen, but
            // should it, what was produced counts and the rest is refused.
            Err(malformed) => {
                let message = format!(
                    "batch {} of {partition} is malformed: {malformed}",
                    batch.seq
                );
                let offset = produced_until_opt.unwrap_or(-1);
                return (
                    produced,
                    Some(write_error(ErrorKind::Rejected, message, offset)),
                );
            }
        };
        if record.offset < skip_below {
            continue;
        }
        let key = record.key;
        let value = record.value;
        if let Some(limit) = limit {
            let size = record_batch_size_estimate(
                key.map_or(0, <[u8]>::len),
                value.map_or(0, <[u8]>::len),
                record.header_count(),
                record.header_bytes(),
            ) as i64;
            if size > limit {
                shared.routes.forget_limit(cluster, &batch.dest_topic);
                let message = format!(
                    "record at offset {} of {}/{} is {size} bytes, larger than destination topic {} accepts (max.message.bytes={limit}); raise the limit to resume",
                    record.offset, partition.topic, partition.partition, batch.dest_topic
                );
                let mut error = write_error(ErrorKind::RecordTooLarge, message, record.offset);
                error.record_size = size;
                error.limit = limit;
                return (produced, Some(error));
            }
        }
        let headers = (record.header_count() > 0).then(|| {
            record.headers().fold(
                OwnedHeaders::new_with_capacity(record.header_count()),
                |headers, header| {
                    headers.insert(Header {
                        key: header.key,
                        value: header.value,
                    })
                },
            )
        });
        let mut base_record: BaseRecord<'_, [u8], [u8], Arc<BatchTracker>> =
            BaseRecord::with_opaque_to(&batch.dest_topic, tracker.clone())
                .partition(mapping.partition_for(key));
        if let Some(key) = key {
            base_record = base_record.key(key);
        }
        if let Some(value) = value {
            base_record = base_record.payload(value);
        }
        if let Some(headers) = headers {
            base_record = base_record.headers(headers);
        }
        if let Some(timestamp) = record.timestamp_ms {
            base_record = base_record.timestamp(timestamp);
        }
        tracker.record_sent();
        loop {
            match producer.send(base_record) {
                Ok(()) => {
                    produced_until_opt = Some(record.offset.saturating_add(1));
                    produced += 1;
                    if mapped {
                        extend_runs(map_runs, record.offset);
                    }
                    break;
                }
                Err((error, returned)) => match classify(&error) {
                    // Wait for deliveries to make room and send the same record
                    // again: nothing else of this partition is sent meanwhile.
                    FailureClass::QueueFull => {
                        base_record = returned;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    class => {
                        tracker.record_not_sent();
                        let kind = error_kind(class);
                        let message = format!(
                            "cannot produce record at offset {} of {}/{} to {}: {error}",
                            record.offset, partition.topic, partition.partition, batch.dest_topic
                        );
                        return (produced, Some(write_error(kind, message, record.offset)));
                    }
                },
            }
        }
    }
    (produced, None)
}

/// Produces one offset map entry through `producer`, waiting out a full queue;
/// its delivery reports to `tracker`. On an error nothing was handed over and
/// the tracker reports nothing (its sender's hold stays).
pub async fn produce_map_entry(
    shared: &WriterShared,
    producer: &DestinationProducer,
    key: &MapKey,
    entry: &MapEntry,
    tracker: &Arc<BatchTracker>,
) -> Result<(), KafkaError> {
    let key_bytes = key.encode();
    let value_bytes = entry.encode();
    let mut record: BaseRecord<'_, [u8], [u8], Arc<BatchTracker>> =
        BaseRecord::with_opaque_to(&shared.offset_map_topic, tracker.clone())
            .partition(map_partition(&key.flow, &key.topic, key.partition))
            .key(&key_bytes[..])
            .payload(&value_bytes[..]);
    tracker.record_sent();
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((error, returned)) if classify(&error) == FailureClass::QueueFull => {
                record = returned;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((error, _)) => {
                tracker.record_not_sent();
                return Err(error);
            }
        }
    }
}

/// Adds a produced record's source offset to the batch's runs.
pub fn extend_runs(runs: &mut Vec<(i64, u32)>, offset: i64) {
    match runs.last_mut() {
        Some((start, len)) if *start + i64::from(*len) == offset => *len += 1,
        _ => runs.push((offset, 1)),
    }
}

pub fn error_kind(class: FailureClass) -> ErrorKind {
    match class {
        FailureClass::RecordTooLarge => ErrorKind::RecordTooLarge,
        FailureClass::DestinationMissing => ErrorKind::DestinationMissing,
        FailureClass::Rejected => ErrorKind::Rejected,
        FailureClass::QueueFull | FailureClass::DeliveryFailed => ErrorKind::DeliveryFailed,
    }
}

pub fn write_error(kind: ErrorKind, message: String, offset: i64) -> WriteError {
    WriteError {
        kind: kind as i32,
        message,
        offset,
        record_size: 0,
        limit: 0,
    }
}
