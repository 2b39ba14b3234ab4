//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, every member exports spans over
//! OTLP/gRPC, and one batch is one trace across the gRPC hop, both ways: the
//! writer's produce span is a child of the fetcher's span for the same batch, the
//! fetcher's span for the acknowledgement a child of the writer's, all with the
//! messaging attributes, and the produce span linked to the trace a source record
//! names in its `traceparent` header (which is mirrored unchanged). The replicate
//! stream's context crosses in the gRPC metadata: the writer's span for the stream
//! is a child of the fetcher's, which links back to it.

use std::time::Duration;

use anyhow::{ensure, Result};
use kmirror_tests::data::KeyedRecords;
use kmirror_tests::kafka::{create_topic, produce, read_all, Cluster};
use kmirror_tests::observability::{hex, OtlpReceiver, ReceivedSpan};
use kmirror_tests::{unique_name, wait_until, Fleet, FleetOptions};

/// A producer's W3C trace context, as an instrumented client would add it.
const SOURCE_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const SOURCE_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// OTLP span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
const KIND_PRODUCER: i32 = 4;
const KIND_CONSUMER: i32 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn one_batch_is_one_trace_from_the_fetcher_to_the_writer() -> Result<()> {
    const RECORDS: u64 = 500;
    const PARTITIONS: i32 = 2;
    let receiver = OtlpReceiver::start().await?;
    let topic = unique_name("traced");
    let flow = unique_name("traced-flow");
    create_topic(Cluster::Source, &topic, PARTITIONS, &[]).await?;
    let mut records = KeyedRecords::new(RECORDS, PARTITIONS).generate();
    records[0].headers.push((
        "traceparent".to_string(),
        Some(SOURCE_TRACEPARENT.as_bytes().to_vec()),
    ));
    produce(Cluster::Source, &topic, records).await?;

    let fleet = Fleet::start(FleetOptions {
        fetchers: 1,
        writers: 1,
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
                receiver.endpoint.clone(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
        ],
        ..FleetOptions::new("traced")
    })
    .await;
    fleet.add_clusters().await;
    fleet.create_flow(&flow, &topic, None).await;
    fleet
        .wait_for_mirror(&topic, RECORDS as i64, Duration::from_secs(120))
        .await;

    // Spans are exported in the background: wait for a fetcher span and the
    // writer span of the same batch.
    let mut pair_opt: Option<(ReceivedSpan, ReceivedSpan)> = None;
    let waited = wait_until(
        Duration::from_secs(60),
        "a fetcher span and its writer span",
        || {
            let spans = receiver.spans();
            pair_opt = batch_pair(&spans, &topic);
            let found = pair_opt.is_some();
            async move {
                if found {
                    Ok(())
                } else {
                    Err(format!("{} spans received, no pair yet", spans.len()))
                }
            }
        },
    )
    .await;
    if let Err(error) = waited {
        panic!("{error}\n{}", fleet.log_paths());
    }
    let (fetcher_span, writer_span) = pair_opt.expect("found");

    assert_eq!(fetcher_span.service, "kmirror-fetcher");
    assert_eq!(fetcher_span.span.kind, KIND_CONSUMER);
    assert_eq!(fetcher_span.span.name, format!("process {topic}"));
    assert_eq!(writer_span.service, "kmirror-writer");
    assert_eq!(writer_span.span.kind, KIND_PRODUCER);
    assert_eq!(writer_span.span.name, format!("send {topic}"));
    assert_eq!(writer_span.trace_id(), fetcher_span.trace_id());
    assert_eq!(writer_span.parent_span_id(), fetcher_span.span_id());
    for (span, operation_type, operation_name) in [
        (&fetcher_span, "process", "process"),
        (&writer_span, "send", "send"),
    ] {
        let attribute = |key: &str| span.attribute(key);
        assert_eq!(attribute("messaging.system").as_deref(), Some("kafka"));
        assert_eq!(
            attribute("messaging.operation.type").as_deref(),
            Some(operation_type)
        );
        assert_eq!(
            attribute("messaging.operation.name").as_deref(),
            Some(operation_name)
        );
        assert_eq!(
            attribute("messaging.destination.name").as_deref(),
            Some(topic.as_str())
        );
        let partition: i32 = attribute("messaging.destination.partition.id")
            .expect("a partition id")
            .parse()?;
        assert!((0..PARTITIONS).contains(&partition), "{partition}");
        let count: i64 = attribute("messaging.batch.message_count")
            .expect("a message count")
            .parse()?;
        assert!(count > 0);
    }
    assert_eq!(
        fetcher_span.attribute("messaging.batch.message_count"),
        writer_span.attribute("messaging.batch.message_count")
    );
    assert_eq!(
        fetcher_span.attribute("messaging.destination.partition.id"),
        writer_span.attribute("kmirror.source.partition"),
        "the writer names the source partition the fetcher read"
    );

    // The acknowledgement comes back into the same trace: the fetcher's settle
    // span is a child of the writer's send span, whose context the ack carried.
    let settle_name = format!("settle {topic}");
    let mut settle_opt: Option<ReceivedSpan> = None;
    let waited = wait_until(
        Duration::from_secs(30),
        "the fetcher's settle span under the writer's send span",
        || {
            let spans = receiver.spans();
            settle_opt = spans
                .iter()
                .find(|span| {
                    span.service == "kmirror-fetcher"
                        && span.span.name == settle_name
                        && span.parent_span_id() == writer_span.span_id()
                })
                .cloned();
            let settle_names: Vec<String> = spans
                .iter()
                .filter(|span| span.span.name.starts_with("settle"))
                .map(|span| format!("{} (parent {})", span.span.name, span.parent_span_id()))
                .take(5)
                .collect();
            let found = settle_opt.is_some();
            let send_span_id = writer_span.span_id();
            async move {
                found.then_some(()).ok_or_else(|| {
                    format!(
                        "no settle span with parent {send_span_id} yet; settle spans seen: {settle_names:?}"
                    )
                })
            }
        },
    )
    .await;
    if let Err(error) = waited {
        panic!("{error}\n{}", fleet.log_paths());
    }
    let settle_span = settle_opt.expect("found");
    assert_eq!(settle_span.span.kind, KIND_CLIENT);
    assert_eq!(settle_span.trace_id(), fetcher_span.trace_id());
    assert_eq!(settle_span.trace_id(), writer_span.trace_id());
    assert_eq!(settle_span.parent_span_id(), writer_span.span_id());
    for (key, expected) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "settle"),
        ("messaging.operation.name", "settle"),
        ("messaging.destination.name", topic.as_str()),
    ] {
        assert_eq!(
            settle_span.attribute(key).as_deref(),
            Some(expected),
            "{key} of the settle span"
        );
    }
    for key in [
        "messaging.destination.partition.id",
        "messaging.batch.message_count",
        "messaging.kafka.offset",
    ] {
        assert!(
            settle_span.attribute(key).is_some(),
            "{key} of the settle span"
        );
        assert_eq!(
            settle_span.attribute(key),
            fetcher_span.attribute(key),
            "{key}: the settle span names the batch the process span covered"
        );
    }

    // The source record's own trace is linked from the span that produced it.
    wait_until(
        Duration::from_secs(30),
        "a writer span linked to the source record's trace",
        || {
            let linked = receiver.spans().iter().any(|span| {
                span.service == "kmirror-writer"
                    && span
                        .span
                        .links
                        .iter()
                        .any(|link| hex(&link.trace_id) == SOURCE_TRACE_ID)
            });
            async move {
                linked
                    .then_some(())
                    .ok_or_else(|| "no link yet".to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let dest = read_all(Cluster::Dest, &topic).await?;
    let carried = dest.values().flatten().any(|record| {
        record.headers.iter().any(|(key, value)| {
            key == "traceparent" && value.as_deref() == Some(SOURCE_TRACEPARENT.as_bytes())
        })
    });
    ensure!(carried, "the traceparent header is mirrored unchanged");

    // The coordinator traces its rounds and the topic it created.
    wait_until(
        Duration::from_secs(30),
        "the coordinator's reconcile and topic creation spans",
        || {
            let spans = receiver.spans();
            let coordinator = |name: &str, kind: i32| {
                spans.iter().any(|span| {
                    span.service == "kmirror-coordinator"
                        && span.span.name == name
                        && span.span.kind == kind
                })
            };
            let found = coordinator("reconcile", KIND_INTERNAL)
                && coordinator("create topics", KIND_CLIENT);
            async move { found.then_some(()).ok_or_else(|| "not yet".to_string()) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));

    // The stream's context crosses in the gRPC metadata. A stream's spans end with
    // the stream: deleting the flow leaves the fetcher nothing for the writer, so
    // it closes the stream while both stay up and export.
    fleet
        .ctl(["flow", "delete", flow.as_str()])
        .await
        .assert_success();
    let mut streams_opt: Option<(ReceivedSpan, ReceivedSpan)> = None;
    let waited = wait_until(
        Duration::from_secs(60),
        "the writer's stream span under the fetcher's",
        || {
            let spans = receiver.spans();
            streams_opt = stream_pair(&spans);
            let stream_spans: Vec<String> = spans
                .iter()
                .filter(|span| span.span.name == STREAM_SPAN_NAME)
                .map(|span| {
                    format!(
                        "{} kind {} span {} parent {}",
                        span.service,
                        span.span.kind,
                        span.span_id(),
                        span.parent_span_id()
                    )
                })
                .collect();
            let found = streams_opt.is_some();
            async move {
                found
                    .then_some(())
                    .ok_or_else(|| format!("stream spans so far: {stream_spans:?}"))
            }
        },
    )
    .await;
    if let Err(error) = waited {
        panic!("{error}\n{}", fleet.log_paths());
    }
    let (fetcher_stream, writer_stream) = streams_opt.expect("found");
    assert_eq!(fetcher_stream.span.kind, KIND_CLIENT);
    assert_eq!(writer_stream.span.kind, KIND_SERVER);
    assert_eq!(writer_stream.trace_id(), fetcher_stream.trace_id());
    assert_eq!(writer_stream.parent_span_id(), fetcher_stream.span_id());
    for span in [&fetcher_stream, &writer_stream] {
        assert_eq!(span.attribute("rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            span.attribute("rpc.service").as_deref(),
            Some("kmirror.v1.Writer")
        );
        assert_eq!(span.attribute("rpc.method").as_deref(), Some("Replicate"));
    }
    // The writer's context came back in the response metadata.
    assert!(
        fetcher_stream.span.links.iter().any(|link| {
            hex(&link.trace_id) == writer_stream.trace_id()
                && hex(&link.span_id) == writer_stream.span_id()
        }),
        "the fetcher's stream span links to the writer's: {:?}",
        fetcher_stream.span.links
    );
    Ok(())
}

/// Name of both ends' spans for a replicate stream (`{rpc.service}/{rpc.method}`).
const STREAM_SPAN_NAME: &str = "kmirror.v1.Writer/Replicate";

/// A fetcher's stream span and the writer's stream span whose parent it is.
fn stream_pair(spans: &[ReceivedSpan]) -> Option<(ReceivedSpan, ReceivedSpan)> {
    spans
        .iter()
        .filter(|span| span.service == "kmirror-writer" && span.span.name == STREAM_SPAN_NAME)
        .find_map(|writer_span| {
            spans
                .iter()
                .find(|span| {
                    span.service == "kmirror-fetcher"
                        && span.span.name == STREAM_SPAN_NAME
                        && span.span_id() == writer_span.parent_span_id()
                })
                .map(|fetcher_span| (fetcher_span.clone(), writer_span.clone()))
        })
}

/// A fetcher span of `topic` and the writer span whose parent it is.
fn batch_pair(spans: &[ReceivedSpan], topic: &str) -> Option<(ReceivedSpan, ReceivedSpan)> {
    let fetcher_name = format!("process {topic}");
    let writer_name = format!("send {topic}");
    spans
        .iter()
        .filter(|span| span.service == "kmirror-writer" && span.span.name == writer_name)
        .find_map(|writer_span| {
            spans
                .iter()
                .find(|span| {
                    span.service == "kmirror-fetcher"
                        && span.span.name == fetcher_name
                        && span.span_id() == writer_span.parent_span_id()
                })
                .map(|fetcher_span| (fetcher_span.clone(), writer_span.clone()))
        })
}
