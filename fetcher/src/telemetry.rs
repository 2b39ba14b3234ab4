//! What the fetcher tells about its partitions: one span per batch, from the core
//! receiving it until the writer's acknowledgement (its W3C context travels in the
//! batch, so the writer's produce span joins the same trace), and the partition
//! metrics: throughput, lag in records and seconds, batches and bytes in flight.
//!
//! Everything here works per batch, never per record beyond adding up sizes. The
//! source end offsets come from librdkafka's statistics (emitted on the consumer
//! thread's poll, see [`SourceEnds`]), so measuring lag costs no request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kmirror_common::metrics::{metrics, Counter, Histogram, PartitionReading};
use kmirror_common::telemetry::{set_error, trace_context, SPAN_TARGET};
use kmirror_common::PartitionKey;
use kmirror_proto::v1::{BatchAck, ErrorKind, Record};
use rdkafka::statistics::Statistics;
use tracing::Span;

/// Low watermark and end (last stable offset: the consumer reads committed
/// records only) of a source partition, as librdkafka last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEnd {
    pub low: i64,
    pub end: i64,
}

/// Source ends of one consumer's partitions, written by its statistics callback.
#[derive(Debug, Clone, Default)]
pub struct SourceEnds {
    ends: Arc<Mutex<HashMap<(String, i32), SourceEnd>>>,
}

impl SourceEnds {
    /// Takes the ends of every partition the statistics report a fetch state for.
    pub fn record(&self, statistics: &Statistics) {
        let mut ends = self.ends.lock().expect("source ends lock poisoned");
        for (topic_name, topic) in &statistics.topics {
            for (partition_number, partition) in &topic.partitions {
                if partition.partition < 0 || partition.hi_offset < 0 {
                    continue;
                }
                let end = if partition.ls_offset >= 0 {
                    partition.ls_offset
                } else {
                    partition.hi_offset
                };
                ends.insert(
                    (topic_name.clone(), *partition_number),
                    SourceEnd {
                        low: partition.lo_offset.max(0),
                        end,
                    },
                );
            }
        }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<SourceEnd> {
        let ends = self.ends.lock().expect("source ends lock poisoned");
        ends.get(&(topic.to_string(), partition)).copied()
    }
}

/// A batch sent to a writer whose records are not all mirrored yet.
struct SentBatch {
    seq: u64,
    next_offset: i64,
    oldest_timestamp_ms: Option<i64>,
    newest_timestamp_ms: Option<i64>,
    bytes: i64,
    sent_at: Instant,
    acked: bool,
    /// Ends (is dropped) when the batch is acknowledged.
    span: Span,
}

struct PartitionTelemetry {
    sent: VecDeque<SentBatch>,
    newest_mirrored_timestamp_ms: Option<i64>,
    source_end: Option<SourceEnd>,
    starts: u64,
    fetched_records: Counter,
    fetched_bytes: Counter,
    record_age: Histogram,
    round_trip: Histogram,
}

impl PartitionTelemetry {
    fn new(partition: &PartitionKey) -> Self {
        let metrics = metrics();
        let labels = metrics.partition_labels(partition);
        let topic_labels = metrics.topic_labels(partition.flow.as_str(), &partition.topic);
        Self {
            sent: VecDeque::new(),
            newest_mirrored_timestamp_ms: None,
            source_end: None,
            starts: 0,
            fetched_records: metrics.fetched_records.get_or_create_owned(&labels),
            fetched_bytes: metrics.fetched_bytes.get_or_create_owned(&labels),
            record_age: metrics.record_age.get_or_create_owned(&topic_labels),
            round_trip: metrics.batch_round_trip.get_or_create_owned(&topic_labels),
        }
    }

    /// Forgets the batches now mirrored (below `committed`), keeping the newest
    /// timestamp among them.
    fn advance(&mut self, committed: i64) {
        while let Some(front) = self.sent.front() {
            if front.next_offset > committed {
                break;
            }
            let mirrored = self.sent.pop_front().expect("front exists");
            if mirrored.newest_timestamp_ms.is_some() {
                self.newest_mirrored_timestamp_ms = mirrored.newest_timestamp_ms;
            }
        }
    }

    fn reading<'a>(
        &self,
        partition: &'a PartitionKey,
        committed: i64,
        now_ms: i64,
    ) -> PartitionReading<'a> {
        let lag_records = self.source_end.map(|source| {
            let mirrored = if committed >= 0 {
                committed
            } else {
                source.low
            };
            (source.end - mirrored).max(0)
        });
        let age_seconds = |timestamp_ms: i64| ((now_ms - timestamp_ms).max(0)) as f64 / 1000.0;
        let lag_seconds = match lag_records {
            Some(0) => Some(0.0),
            // The oldest record not mirrored yet, when it was fetched; else the
            // newest mirrored one (the next record is no older).
            _ => self
                .sent
                .front()
                .and_then(|oldest| oldest.oldest_timestamp_ms)
                .or(self.newest_mirrored_timestamp_ms)
                .map(age_seconds),
        };
        let (in_flight_batches, in_flight_bytes) = self
            .sent
            .iter()
            .filter(|batch| !batch.acked)
            .fold((0, 0), |(batches, bytes), batch| {
                (batches + 1, bytes + batch.bytes)
            });
        PartitionReading {
            partition,
            lag_records,
            lag_seconds,
            in_flight_batches,
            in_flight_bytes,
        }
    }
}

/// Telemetry of every partition the core holds; owned by the core.
#[derive(Default)]
pub struct FetcherTelemetry {
    partitions: HashMap<PartitionKey, PartitionTelemetry>,
}

impl FetcherTelemetry {
    fn partition(&mut self, partition: &PartitionKey) -> &mut PartitionTelemetry {
        self.partitions
            .entry(partition.clone())
            .or_insert_with(|| PartitionTelemetry::new(partition))
    }

    /// The partition (re)starts from its committed position: what was in flight is
    /// dropped (and will be sent again).
    pub fn partition_started(&mut self, partition: &PartitionKey) {
        let telemetry = self.partition(partition);
        telemetry.sent.clear();
        telemetry.starts += 1;
        if telemetry.starts > 1 {
            let metrics = metrics();
            metrics
                .partition_restarts
                .get_or_create(&metrics.partition_labels(partition))
                .inc();
        }
    }

    /// The partition is no longer assigned here.
    pub fn forget(&mut self, partition: &PartitionKey) {
        self.partitions.remove(partition);
    }

    /// Counts a batch about to be sent, opens its span and returns the span's
    /// trace context for the batch (empty when traces are off).
    pub fn batch_sent(
        &mut self,
        partition: &PartitionKey,
        seq: u64,
        epoch: u64,
        records: &[Record],
        next_offset: i64,
    ) -> HashMap<String, String> {
        let telemetry = self.partition(partition);
        let bytes: usize = records.iter().map(record_bytes).sum();
        let oldest_timestamp_ms = records
            .iter()
            .filter_map(|record| record.timestamp_ms)
            .min();
        let newest_timestamp_ms = records
            .iter()
            .filter_map(|record| record.timestamp_ms)
            .max();
        telemetry.fetched_records.inc_by(records.len() as u64);
        telemetry.fetched_bytes.inc_by(bytes as u64);
        if let Some(oldest) = oldest_timestamp_ms {
            let age_ms = (kmirror_common::now_ms() - oldest).max(0);
            telemetry.record_age.observe(age_ms as f64 / 1000.0);
        }
        let first_offset = records.first().map_or(next_offset, |record| record.offset);
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "process",
            otel.name = %format_args!("process {}", partition.topic),
            otel.kind = "consumer",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "process",
            "messaging.operation.name" = "process",
            "messaging.destination.name" = %partition.topic,
            "messaging.destination.partition.id" = %partition.partition,
            "messaging.batch.message_count" = records.len() as i64,
            "messaging.kafka.offset" = first_offset,
            "kmirror.flow" = %partition.flow,
            "kmirror.batch.seq" = seq as i64,
            "kmirror.batch.bytes" = bytes as i64,
            "kmirror.batch.next_offset" = next_offset,
            "kmirror.epoch" = epoch as i64,
            "kmirror.dest.partition" = tracing::field::Empty,
            "kmirror.dest.offset" = tracing::field::Empty,
        );
        let context = trace_context(&span);
        telemetry.sent.push_back(SentBatch {
            seq,
            next_offset,
            oldest_timestamp_ms,
            newest_timestamp_ms,
            bytes: bytes as i64,
            sent_at: Instant::now(),
            acked: false,
            span,
        });
        context
    }

    /// The writer answered a batch: its span ends, with the error if any.
    pub fn batch_acked(&mut self, partition: &PartitionKey, ack: &BatchAck) {
        let Some(telemetry) = self.partitions.get_mut(partition) else {
            return;
        };
        let Some(batch) = telemetry
            .sent
            .iter_mut()
            .find(|batch| batch.seq == ack.seq && !batch.acked)
        else {
            return;
        };
        batch.acked = true;
        telemetry
            .round_trip
            .observe(batch.sent_at.elapsed().as_secs_f64());
        let span = std::mem::replace(&mut batch.span, Span::none());
        match &ack.error {
            None => {
                span.record("kmirror.dest.partition", ack.dest_partition);
                span.record("kmirror.dest.offset", ack.dest_offset);
            }
            Some(error) => {
                let kind = ErrorKind::try_from(error.kind).unwrap_or(ErrorKind::Unspecified);
                set_error(
                    &span,
                    &kmirror_common::metrics::error_kind_label(&format!("{kind:?}")),
                    &error.message,
                );
            }
        }
    }

    /// Publishes the partition gauges: `partitions` gives each held partition with
    /// its committed (mirrored) position, `source_end` the consumer's view of its end.
    pub fn publish<'a>(
        &mut self,
        partitions: impl Iterator<Item = (&'a PartitionKey, i64)>,
        source_end: impl Fn(&PartitionKey) -> Option<SourceEnd>,
    ) {
        let now_ms = kmirror_common::now_ms();
        let mut readings = Vec::new();
        for (partition, committed) in partitions {
            let fresh_end = source_end(partition);
            let telemetry = self.partition(partition);
            if fresh_end.is_some() {
                telemetry.source_end = fresh_end;
            }
            telemetry.advance(committed);
            readings.push(telemetry.reading(partition, committed, now_ms));
        }
        metrics().publish_partition_gauges(readings);
    }
}

/// Bytes of a record's key, value and headers.
fn record_bytes(record: &Record) -> usize {
    let optional = |bytes: &Option<bytes::Bytes>| bytes.as_ref().map_or(0, |bytes| bytes.len());
    let headers: usize = record
        .headers
        .iter()
        .map(|header| header.key.len() + optional(&header.value))
        .sum();
    optional(&record.key) + optional(&record.value) + headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::FlowName;

    fn partition() -> PartitionKey {
        PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0)
    }

    fn records(first_offset: i64, count: i64, timestamp_ms: i64) -> Vec<Record> {
        (first_offset..first_offset + count)
            .map(|offset| Record {
                offset,
                key: Some(bytes::Bytes::from_static(b"key")),
                value: Some(bytes::Bytes::from_static(b"value")),
                headers: Vec::new(),
                timestamp_ms: Some(timestamp_ms + offset),
            })
            .collect()
    }

    fn ack(seq: u64) -> BatchAck {
        BatchAck {
            seq,
            committed_offset: -1,
            dest_partition: 0,
            dest_offset: 0,
            ..BatchAck::default()
        }
    }

    #[test]
    fn lag_is_the_distance_to_the_source_end_and_the_age_of_the_oldest_unmirrored_record() {
        let key = partition();
        let mut telemetry = FetcherTelemetry::default();
        telemetry.partition_started(&key);
        let now = kmirror_common::now_ms();
        telemetry.batch_sent(&key, 1, 7, &records(0, 10, now - 60_000), 10);
        telemetry.batch_sent(&key, 2, 7, &records(10, 10, now - 30_000), 20);
        telemetry.batch_acked(&key, &ack(1));

        let state = telemetry.partitions.get_mut(&key).unwrap();
        state.source_end = Some(SourceEnd { low: 0, end: 25 });
        state.advance(10);
        let reading = state.reading(&key, 10, now);
        assert_eq!(reading.lag_records, Some(15));
        let lag_seconds = reading.lag_seconds.unwrap();
        assert!((29.0..31.0).contains(&lag_seconds), "{lag_seconds}");
        assert_eq!(reading.in_flight_batches, 1);
        assert_eq!(reading.in_flight_bytes, 80);

        // Everything mirrored and nothing more at the source: no lag at all.
        state.source_end = Some(SourceEnd { low: 0, end: 20 });
        state.advance(20);
        let caught_up = state.reading(&key, 20, now);
        assert_eq!(caught_up.lag_records, Some(0));
        assert_eq!(caught_up.lag_seconds, Some(0.0));
        assert_eq!(caught_up.in_flight_batches, 0);

        // More at the source, not fetched yet: the newest mirrored record's age.
        state.source_end = Some(SourceEnd { low: 0, end: 21 });
        let behind = state.reading(&key, 20, now);
        assert!((29.0..31.0).contains(&behind.lag_seconds.unwrap()));
    }

    #[test]
    fn without_a_checkpoint_lag_counts_from_the_low_watermark() {
        let key = partition();
        let mut telemetry = FetcherTelemetry::default();
        telemetry.partition_started(&key);
        let state = telemetry.partitions.get_mut(&key).unwrap();
        state.source_end = Some(SourceEnd { low: 5, end: 8 });
        let reading = state.reading(&key, -1, kmirror_common::now_ms());
        assert_eq!(reading.lag_records, Some(3));
        assert_eq!(reading.lag_seconds, None);
    }

    #[test]
    fn a_restart_drops_what_was_in_flight() {
        let key = partition();
        let mut telemetry = FetcherTelemetry::default();
        telemetry.partition_started(&key);
        let context = telemetry.batch_sent(&key, 1, 1, &records(0, 3, 0), 3);
        assert!(context.is_empty(), "traces are off in unit tests");
        telemetry.partition_started(&key);
        let state = telemetry.partitions.get(&key).unwrap();
        assert!(state.sent.is_empty());
        assert_eq!(state.starts, 2);
        telemetry.forget(&key);
        assert!(telemetry.partitions.is_empty());
    }
}
