//! What the fetcher tells about its partitions and streams: one span per batch,
//! from the core receiving it until the writer's acknowledgement (its W3C context
//! travels in the batch, so the writer's produce span joins the same trace), one
//! span for the handling of each acknowledgement (a child of the writer's span,
//! whose context travels in the ack), one span per replicate stream (its context
//! travels in the request metadata), and the partition metrics: throughput, lag in
//! records and seconds, batches and bytes in flight.
//!
//! Everything here works per batch, never per record: the figures of a batch's
//! records (count, bytes, timestamps) are taken while it is gathered. The
//! source end offsets come from librdkafka's statistics (emitted on the consumer
//! thread's poll, see [`SourceEnds`]), so measuring lag costs no request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kmirror_common::metrics::{metrics, Counter, Histogram, PartitionReading};
use kmirror_common::telemetry::{
    link_remote, metadata_trace_context, set_error, set_parent_span, set_remote_parent,
    trace_context, SPAN_TARGET,
};
use kmirror_common::{MemberId, PartitionKey};
use kmirror_proto::packed::PackedSummary;
use kmirror_proto::tonic::metadata::MetadataMap;
use kmirror_proto::tonic::Status;
use kmirror_proto::v1::{BatchAck, ErrorKind};
use serde::Deserialize;
use tracing::Span;

/// Low watermark and end (last stable offset: the consumer reads committed
/// records only) of a source partition, as librdkafka last saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceEnd {
    pub low: i64,
    pub end: i64,
}

/// The part of librdkafka's statistics JSON the source ends come from.
#[derive(Debug, Deserialize)]
struct EndsInStatistics {
    #[serde(default)]
    topics: HashMap<String, TopicInStatistics>,
}

#[derive(Debug, Deserialize)]
struct TopicInStatistics {
    #[serde(default)]
    partitions: HashMap<i32, PartitionInStatistics>,
}

#[derive(Debug, Deserialize)]
struct PartitionInStatistics {
    partition: i32,
    #[serde(default = "unknown_offset")]
    lo_offset: i64,
    #[serde(default = "unknown_offset")]
    hi_offset: i64,
    #[serde(default = "unknown_offset")]
    ls_offset: i64,
}

fn unknown_offset() -> i64 {
    -1
}

/// Source ends of one consumer's partitions, written by its statistics callback.
#[derive(Debug, Clone, Default)]
pub struct SourceEnds {
    ends: Arc<Mutex<HashMap<(String, i32), SourceEnd>>>,
}

impl SourceEnds {
    /// Takes the ends of every partition the statistics (librdkafka's JSON)
    /// report a fetch state for. Only the offsets are decoded; everything else
    /// in the JSON is skipped without being kept.
    pub fn record_json(&self, json: &[u8]) -> Result<(), serde_json::Error> {
        let statistics: EndsInStatistics = serde_json::from_slice(json)?;
        let mut ends = self.ends.lock().expect("source ends lock poisoned");
        for (topic_name, topic) in statistics.topics {
            for (partition_number, partition) in topic.partitions {
                if partition.partition < 0 || partition.hi_offset < 0 {
                    continue;
                }
                let end = if partition.ls_offset >= 0 {
                    partition.ls_offset
                } else {
                    partition.hi_offset
                };
                ends.insert(
                    (topic_name.clone(), partition_number),
                    SourceEnd {
                        low: partition.lo_offset.max(0),
                        end,
                    },
                );
            }
        }
        Ok(())
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<SourceEnd> {
        let ends = self.ends.lock().expect("source ends lock poisoned");
        ends.get(&(topic.to_string(), partition)).copied()
    }
}

/// A batch sent to a writer whose records are not all mirrored yet.
struct SentBatch {
    seq: u64,
    first_offset: i64,
    record_count: i64,
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
        records: &PackedSummary,
        next_offset: i64,
    ) -> HashMap<String, String> {
        let telemetry = self.partition(partition);
        let bytes = records.data_bytes();
        let oldest_timestamp_ms = records.oldest_timestamp_ms;
        let newest_timestamp_ms = records.newest_timestamp_ms;
        let record_count = i64::from(records.record_count);
        telemetry
            .fetched_records
            .inc_by(u64::from(records.record_count));
        telemetry.fetched_bytes.inc_by(bytes);
        if let Some(oldest) = oldest_timestamp_ms {
            let age_ms = (kmirror_common::now_ms() - oldest).max(0);
            telemetry.record_age.observe(age_ms as f64 / 1000.0);
        }
        let first_offset = records.first_offset.unwrap_or(next_offset);
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
            "messaging.batch.message_count" = record_count,
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
            first_offset,
            record_count,
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

    /// The writer answered a batch: its `process` span ends, with the error if any,
    /// and the returned `settle` span, a child of the writer's span for the batch
    /// (whose context the ack carries), covers the handling of the answer until it
    /// is dropped. A disabled span when traces are off.
    pub fn batch_acked(&mut self, partition: &PartitionKey, ack: &BatchAck) -> Span {
        let batch_opt = self.partitions.get_mut(partition).and_then(|telemetry| {
            let batch = telemetry
                .sent
                .iter_mut()
                .find(|batch| batch.seq == ack.seq && !batch.acked)?;
            batch.acked = true;
            telemetry
                .round_trip
                .observe(batch.sent_at.elapsed().as_secs_f64());
            Some(batch)
        });
        let Some(batch) = batch_opt else {
            // An ack from before the partition restarted: its process span is gone,
            // the writer's span (if any) is the settle span's only relative.
            return settle_span(partition, ack, None);
        };
        let process_span = std::mem::replace(&mut batch.span, Span::none());
        let settle_span = settle_span(partition, ack, Some((&*batch, &process_span)));
        match &ack.error {
            None => {
                process_span.record("kmirror.dest.partition", ack.dest_partition);
                process_span.record("kmirror.dest.offset", ack.dest_offset);
            }
            Some(error) => {
                let kind = error_kind_label(error.kind);
                set_error(&process_span, &kind, &error.message);
            }
        }
        settle_span
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

/// The span covering the handling of `ack`: kind client (the settle operation of
/// the messaging conventions), a child of the writer's span for the batch when the
/// ack names it, else of the batch's `process` span. None at all (a disabled span)
/// when neither is recorded, so nothing is built while traces are off.
fn settle_span(
    partition: &PartitionKey,
    ack: &BatchAck,
    batch_opt: Option<(&SentBatch, &Span)>,
) -> Span {
    let process_span_opt = batch_opt
        .map(|(_, span)| span)
        .filter(|span| !span.is_disabled());
    if ack.trace_context.is_empty() && process_span_opt.is_none() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "settle",
        otel.name = %format_args!("settle {}", partition.topic),
        otel.kind = "client",
        "messaging.system" = "kafka",
        "messaging.operation.type" = "settle",
        "messaging.operation.name" = "settle",
        "messaging.destination.name" = %partition.topic,
        "messaging.destination.partition.id" = %partition.partition,
        "messaging.batch.message_count" = tracing::field::Empty,
        "messaging.kafka.offset" = tracing::field::Empty,
        "kmirror.flow" = %partition.flow,
        "kmirror.batch.seq" = ack.seq as i64,
        "kmirror.epoch" = ack.epoch as i64,
        "kmirror.committed_offset" = ack.committed_offset,
        "kmirror.dest.partition" = ack.dest_partition,
        "kmirror.dest.offset" = ack.dest_offset,
    );
    if span.is_disabled() {
        return span;
    }
    if !set_remote_parent(&span, &ack.trace_context) {
        if let Some(process_span) = process_span_opt {
            set_parent_span(&span, process_span);
        }
    }
    if let Some((batch, _)) = batch_opt {
        span.record("messaging.batch.message_count", batch.record_count);
        span.record("messaging.kafka.offset", batch.first_offset);
    }
    if let Some(error) = &ack.error {
        set_error(&span, &error_kind_label(error.kind), &error.message);
    }
    span
}

/// The span of one replicate stream to `writer`, from its opening to its end:
/// kind client, its W3C context sent in the request metadata so that the writer's
/// span for the stream is its child.
pub fn replicate_stream_span(writer: &MemberId, address: &str) -> Span {
    tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "replicate stream",
        otel.name = "kmirror.v1.Writer/Replicate",
        otel.kind = "client",
        "rpc.system" = "grpc",
        "rpc.service" = "kmirror.v1.Writer",
        "rpc.method" = "Replicate",
        "server.address" = %address,
        "kmirror.writer" = %writer,
    )
}

/// Links the stream span to the writer's span for the stream, whose W3C context
/// the response's initial metadata carries.
pub fn link_writer_stream(stream_span: &Span, metadata: &MetadataMap) {
    if stream_span.is_disabled() {
        return;
    }
    let writer_context = metadata_trace_context(metadata);
    link_remote(stream_span, &writer_context);
}

/// The stream ended on an error: its span says so.
pub fn stream_failed(stream_span: &Span, error: &(dyn std::error::Error + 'static)) {
    if stream_span.is_disabled() {
        return;
    }
    let kind = match error.downcast_ref::<Status>() {
        Some(status) => format!("{:?}", status.code()),
        None => "transport".to_string(),
    };
    set_error(stream_span, &kind, &error.to_string());
}

fn error_kind_label(kind: i32) -> String {
    let kind = ErrorKind::try_from(kind).unwrap_or(ErrorKind::Unspecified);
    kmirror_common::metrics::error_kind_label(&format!("{kind:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::FlowName;

    fn partition() -> PartitionKey {
        PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0)
    }

    fn records(first_offset: i64, count: i64, timestamp_ms: i64) -> PackedSummary {
        let mut builder = kmirror_proto::packed::PackedBuilder::default();
        for offset in first_offset..first_offset + count {
            builder
                .push(
                    offset,
                    Some(&b"key"[..]),
                    Some(&b"value"[..]),
                    kmirror_proto::packed::NO_HEADERS,
                    Some(timestamp_ms + offset),
                )
                .unwrap();
        }
        *builder.summary()
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
        let settle_span = telemetry.batch_acked(&key, &ack(1));
        assert!(settle_span.is_disabled(), "traces are off in unit tests");

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

    #[test]
    fn source_ends_come_from_the_statistics_json_and_skip_the_rest() {
        let json = br#"{"name":"c","brokers":{"b":{"toppars":{}}},"topics":{"orders":{"topic":"orders","batchsize":{"min":0},"partitions":{
            "0":{"partition":0,"fetch_state":"active","lo_offset":3,"hi_offset":20,"ls_offset":18,"msgs":7},
            "1":{"partition":1,"lo_offset":0,"hi_offset":5,"ls_offset":-1},
            "-1":{"partition":-1,"lo_offset":-1,"hi_offset":-1,"ls_offset":-1}}}}}"#;
        let ends = SourceEnds::default();
        ends.record_json(json).unwrap();
        assert_eq!(ends.get("orders", 0), Some(SourceEnd { low: 3, end: 18 }));
        assert_eq!(ends.get("orders", 1), Some(SourceEnd { low: 0, end: 5 }));
        assert_eq!(ends.get("orders", -1), None);
        assert!(ends.record_json(b"not json").is_err());
    }
}
