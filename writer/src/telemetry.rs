//! What the writer tells about the batches it produces: one producer span per batch
//! (a child of the fetcher's span, whose W3C context the batch carries, and linked
//! to the traces of source records that carry a `traceparent` header; its own
//! context goes back in the batch's ack), one server span per replicate stream (a
//! child of the fetcher's, whose context the request metadata carries), and the
//! throughput, latency, error and in-flight metrics.
//!
//! Work is per batch: the figures of a batch's records come from the pass that
//! validates it on arrival, and record headers are looked at for trace parents
//! only while traces are exported.

use kmirror_common::metrics::{error_kind_label, metrics};
use std::collections::HashMap;

use kmirror_common::telemetry::{
    link_traceparent, metadata_trace_context, set_error, set_remote_parent, trace_context,
    SPAN_TARGET,
};
use kmirror_common::PartitionKey;
use kmirror_proto::packed::{PackedRecords, PackedSummary};
use kmirror_proto::tonic::metadata::MetadataMap;
use kmirror_proto::tonic::Status;
use kmirror_proto::v1::{Batch, BatchAck, ErrorKind, WriteError};
use tracing::Span;

/// Most links from one batch's span to the traces of its records.
const MAX_RECORD_LINKS: usize = 32;

/// A batch handed to the producer, from its first record to its acknowledgement.
pub struct BatchTelemetry {
    span: Span,
    records: u64,
    bytes: u64,
    oldest_timestamp_ms: Option<i64>,
}

impl BatchTelemetry {
    /// Opens the batch's span and counts it as being produced; `summary` holds the
    /// figures of its (validated) records.
    pub fn start(batch: &Batch, summary: &PackedSummary, partition: &PartitionKey) -> Self {
        let records = u64::from(summary.record_count);
        let bytes = summary.data_bytes();
        let first_offset = summary.first_offset.unwrap_or(batch.next_offset);
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "send",
            otel.name = %format_args!("send {}", batch.dest_topic),
            otel.kind = "producer",
            "messaging.system" = "kafka",
            "messaging.operation.type" = "send",
            "messaging.operation.name" = "send",
            "messaging.destination.name" = %batch.dest_topic,
            "messaging.destination.partition.id" = tracing::field::Empty,
            "messaging.batch.message_count" = records as i64,
            "messaging.kafka.offset" = tracing::field::Empty,
            "kmirror.flow" = %partition.flow,
            "kmirror.source.topic" = %partition.topic,
            "kmirror.source.partition" = partition.partition,
            "kmirror.source.first_offset" = first_offset,
            "kmirror.batch.next_offset" = batch.next_offset,
            "kmirror.batch.seq" = batch.seq as i64,
            "kmirror.batch.bytes" = bytes as i64,
            "kmirror.epoch" = batch.epoch as i64,
        );
        if !span.is_disabled() {
            set_remote_parent(&span, &batch.trace_context);
            link_record_traces(&span, batch.packed());
        }
        let metrics = metrics();
        metrics.producing_batches.inc();
        metrics.producing_bytes.inc_by(bytes as i64);
        Self {
            span,
            records,
            bytes,
            oldest_timestamp_ms: summary.oldest_timestamp_ms,
        }
    }

    /// The batch was cut short before the record at `offset`: only the records
    /// before it count.
    pub fn cut_at(&mut self, batch: &Batch, offset: i64) {
        let (records, bytes) = batch
            .packed()
            .iter()
            .map_while(Result::ok)
            .take_while(|record| record.offset < offset)
            .fold((0, 0), |(records, bytes), record| {
                (records + 1, bytes + record.data_bytes() as u64)
            });
        metrics()
            .producing_bytes
            .dec_by(self.bytes as i64 - bytes as i64);
        self.records = records;
        self.bytes = bytes;
    }

    /// The batch's outcome is known: `committed_offset` is -1 when nothing of it
    /// counts as written, `error_opt` says why it failed or was cut short. The span
    /// ends; its W3C context is returned for the ack (empty when traces are off).
    pub fn finish(
        self,
        partition: &PartitionKey,
        committed_offset: i64,
        error_opt: Option<&WriteError>,
        dest_partition: i32,
        dest_offset: i64,
    ) -> HashMap<String, String> {
        let metrics = metrics();
        if committed_offset >= 0 && self.records > 0 {
            let labels = metrics.partition_labels(partition);
            metrics
                .produced_records
                .get_or_create(&labels)
                .inc_by(self.records);
            metrics
                .produced_bytes
                .get_or_create(&labels)
                .inc_by(self.bytes);
            if let Some(oldest) = self.oldest_timestamp_ms {
                let latency_ms = (kmirror_common::now_ms() - oldest).max(0);
                metrics
                    .replication_latency
                    .get_or_create(&metrics.topic_labels(partition.flow.as_str(), &partition.topic))
                    .observe(latency_ms as f64 / 1000.0);
            }
        }
        if dest_partition >= 0 {
            self.span.record(
                "messaging.destination.partition.id",
                dest_partition.to_string(),
            );
            self.span.record("messaging.kafka.offset", dest_offset);
        }
        if let Some(error) = error_opt {
            set_error(&self.span, &kind_label(error.kind), &error.message);
        }
        trace_context(&self.span)
    }
}

/// The span of a batch refused before it reached a producer (stale epoch, halted
/// partition, ...): a `send` span like a produced batch's, a child of the fetcher's
/// span, failed with the refusal and ended at once. Returns its W3C context for the
/// ack (empty when traces are off).
pub fn refused(batch: &Batch, error: &WriteError) -> HashMap<String, String> {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "send",
        otel.name = %format_args!("send {}", batch.dest_topic),
        otel.kind = "producer",
        "messaging.system" = "kafka",
        "messaging.operation.type" = "send",
        "messaging.operation.name" = "send",
        "messaging.destination.name" = %batch.dest_topic,
        "messaging.batch.message_count" = i64::from(batch.record_count),
        "kmirror.flow" = batch.source.as_ref().map_or("", |source| source.flow.as_str()),
        "kmirror.source.topic" = batch.source.as_ref().map_or("", |source| source.topic.as_str()),
        "kmirror.source.partition" = batch.source.as_ref().map_or(-1, |source| source.partition),
        "kmirror.batch.next_offset" = batch.next_offset,
        "kmirror.batch.seq" = batch.seq as i64,
        "kmirror.epoch" = batch.epoch as i64,
    );
    if span.is_disabled() {
        return HashMap::new();
    }
    set_remote_parent(&span, &batch.trace_context);
    set_error(&span, &kind_label(error.kind), &error.message);
    trace_context(&span)
}

/// The span of one replicate stream, from the call until the stream ends: kind
/// server, a child of the fetcher's span for the stream when the request metadata
/// carries its W3C context.
pub fn stream_span(metadata: &MetadataMap, peer_opt: Option<std::net::SocketAddr>) -> Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "replicate stream",
        otel.name = "kmirror.v1.Writer/Replicate",
        otel.kind = "server",
        "rpc.system" = "grpc",
        "rpc.service" = "kmirror.v1.Writer",
        "rpc.method" = "Replicate",
        "client.address" = tracing::field::Empty,
        "client.port" = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(peer) = peer_opt {
        span.record("client.address", peer.ip().to_string());
        span.record("client.port", i64::from(peer.port()));
    }
    let fetcher_context = metadata_trace_context(metadata);
    set_remote_parent(&span, &fetcher_context);
    span
}

/// The stream ended on an error: its span says so.
pub fn stream_failed(stream_span: &Span, status: &Status) {
    set_error(
        stream_span,
        &format!("{:?}", status.code()),
        status.message(),
    );
}

impl Drop for BatchTelemetry {
    fn drop(&mut self) {
        let metrics = metrics();
        metrics.producing_batches.dec();
        metrics.producing_bytes.dec_by(self.bytes as i64);
    }
}

/// Counts a batch refused or failed, by kind.
pub fn count_ack(ack: &BatchAck) {
    let (Some(error), Some(source)) = (&ack.error, &ack.source) else {
        return;
    };
    let metrics = metrics();
    let mut labels = metrics.topic_labels(&source.flow, &source.topic);
    labels.push(("kind", kind_label(error.kind)));
    metrics.remember(&labels);
    metrics.produce_errors.get_or_create(&labels).inc();
}

fn kind_label(kind: i32) -> String {
    let kind = ErrorKind::try_from(kind).unwrap_or(ErrorKind::Unspecified);
    error_kind_label(&format!("{kind:?}"))
}

/// Links the span to the traces named by the records' `traceparent` headers (the
/// headers themselves are mirrored unchanged).
fn link_record_traces(span: &Span, records: PackedRecords<'_>) {
    let mut links = 0;
    for record in records.iter().map_while(Result::ok) {
        for header in record.headers() {
            if header.key != "traceparent" {
                continue;
            }
            if let Some(value) = header.value {
                if link_traceparent(span, value) {
                    links += 1;
                    if links == MAX_RECORD_LINKS {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmirror_common::FlowName;
    use kmirror_proto::packed::PackedBuilder;
    use kmirror_proto::v1::SourcePartition;

    fn batch() -> Batch {
        let mut records = PackedBuilder::default();
        for offset in 10..13 {
            let traceparent: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            records
                .push(
                    offset,
                    Some(b"k"),
                    Some(b"value"),
                    [("traceparent", Some(traceparent))],
                    Some(1_000 + offset),
                )
                .unwrap();
        }
        let mut batch = Batch {
            source: Some(SourcePartition {
                flow: "dr".to_string(),
                topic: "orders".to_string(),
                partition: 0,
            }),
            dest_topic: "orders".to_string(),
            next_offset: 13,
            ..Batch::default()
        };
        batch.set_packed(records.finish());
        batch
    }

    #[test]
    fn a_cut_short_batch_counts_only_the_records_before_the_cut() {
        let batch = batch();
        let summary = batch.packed().validate().unwrap();
        let partition = PartitionKey::new(FlowName::new("dr").unwrap(), "orders", 0);
        let mut telemetry = BatchTelemetry::start(&batch, &summary, &partition);
        // key 1 + value 5 + header "traceparent" (11) and its 55-byte value
        assert_eq!((telemetry.records, telemetry.bytes), (3, 3 * 72));
        telemetry.cut_at(&batch, 12);
        assert_eq!((telemetry.records, telemetry.bytes), (2, 2 * 72));
        let context = telemetry.finish(&partition, 12, None, 0, 41);
        assert!(context.is_empty(), "traces are off in unit tests");
    }

    #[test]
    fn without_traces_nothing_is_built_for_refusals_and_streams() {
        let error = WriteError {
            kind: ErrorKind::StaleEpoch as i32,
            ..WriteError::default()
        };
        assert!(refused(&batch(), &error).is_empty());
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let span = stream_span(&metadata, None);
        assert!(span.is_disabled());
        let mut response_metadata = MetadataMap::new();
        kmirror_common::telemetry::inject_metadata_context(&span, &mut response_metadata);
        assert!(response_metadata.is_empty());
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let ack = BatchAck {
            source: batch().source,
            error: Some(WriteError {
                kind: ErrorKind::RecordTooLarge as i32,
                ..WriteError::default()
            }),
            ..BatchAck::default()
        };
        count_ack(&ack);
        let metrics = metrics();
        let mut labels = metrics.topic_labels("dr", "orders");
        labels.push(("kind", "record_too_large".to_string()));
        assert!(metrics.produce_errors.get(&labels).unwrap().get() >= 1);
    }
}
