//! Logging and tracing set-up shared by every binary.
//!
//! Logs are human-readable lines on stderr, filtered by `RUST_LOG`. Traces are
//! OpenTelemetry spans exported over OTLP/gRPC, configured by the standard `OTEL_*`
//! variables and off unless one of them asks for them:
//!
//! - on when `OTEL_TRACES_EXPORTER` names `otlp`, or when it is unset and
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set;
//! - off when `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`;
//! - the exporter and the SDK read the rest themselves: `OTEL_SERVICE_NAME`,
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
//!   `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` and `_TIMEOUT`.
//!
//! The spans kmirror exports are created under the target [`SPAN_TARGET`], which
//! only the OpenTelemetry layer listens to. With traces off no layer does, so the
//! span macros at those call sites return a disabled span without evaluating their
//! fields: tracing costs nothing on the data path then.

use std::collections::HashMap;
use std::time::Duration;

use kmirror_proto::tonic::metadata::MetadataMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Target of every span meant for OpenTelemetry (and only for it).
pub const SPAN_TARGET: &str = "kmirror_otel";

/// How long flushing the spans still queued may take when the process stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Installed telemetry; [`Telemetry::shutdown`] flushes what is queued.
#[must_use = "call shutdown() before exiting so queued spans are exported"]
pub struct Telemetry {
    tracer_provider_opt: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer_provider_opt.is_some()
    }

    /// Exports the spans still queued (bounded by a timeout) and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.tracer_provider_opt else {
            return;
        };
        // The SDK blocks while its exporter thread drains; the exporter's gRPC
        // client needs the runtime meanwhile.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match flushed {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the trace exporter"),
            Err(error) => tracing::warn!(%error, "cannot flush the trace exporter"),
        }
    }
}

/// Installs the log subscriber and, when the `OTEL_*` variables ask for it, the
/// OpenTelemetry trace exporter. Must run inside the Tokio runtime (the exporter's
/// gRPC client lives on it).
pub fn init(service_name: &str) -> Telemetry {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    init_with_log_writer(service_name, BoxMakeWriter::new(std::io::stderr), ansi)
}

/// [`init`] with the log lines written to `log_writer` instead of straight to
/// stderr (`kmirror mirror` writes them above its progress bar); `ansi` colours
/// them.
pub fn init_with_log_writer(
    service_name: &str,
    log_writer: BoxMakeWriter,
    ansi: bool,
) -> Telemetry {
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,h2=warn,tower=warn,hyper=warn"));

    let decision = trace_export(|name| std::env::var(name).ok());
    let mut problem_opt = decision.warning.clone();
    let mut tracer_provider_opt = None;
    if decision.enabled {
        match build_tracer_provider(service_name) {
            Ok(provider) => tracer_provider_opt = Some(provider),
            Err(error) => problem_opt = Some(format!("traces stay off: {error}")),
        }
    }
    let tracer_opt = tracer_provider_opt
        .as_ref()
        .map(|provider| provider.tracer("kmirror"));
    let _ = subscriber_with_writer(log_filter, tracer_opt, log_writer, ansi).try_init();

    if let Some(problem) = problem_opt {
        tracing::warn!(service = service_name, "{problem}");
    }
    if tracer_provider_opt.is_some() {
        tracing::info!(
            service = service_name,
            endpoint = %decision.endpoint,
            "exporting traces over OTLP/gRPC"
        );
    }
    tracing::debug!(service = service_name, "telemetry initialised");
    Telemetry {
        tracer_provider_opt,
    }
}

/// The subscriber [`init`] installs: the logs on stderr (`log_filter`, kmirror's
/// spans left out) and, given a tracer, kmirror's spans for it.
///
/// Without a tracer the subscriber has no trace layer at all. tracing-subscriber
/// takes a `None` layer for one that wants everything, so with `None` in its place
/// every batch's span would be built (and the writer would read each record's
/// headers for trace links) with nothing to export them.
pub fn subscriber(
    log_filter: EnvFilter,
    tracer_opt: Option<Tracer>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber_with_writer(
        log_filter,
        tracer_opt,
        BoxMakeWriter::new(std::io::stderr),
        ansi,
    )
}

fn subscriber_with_writer(
    log_filter: EnvFilter,
    tracer_opt: Option<Tracer>,
    log_writer: BoxMakeWriter,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let log_filter = log_filter.add_directive(
        format!("{SPAN_TARGET}=off")
            .parse()
            .expect("a valid directive"),
    );
    let log_layer = tracing_subscriber::fmt::layer()
        .with_writer(log_writer)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter(log_filter);
    let registry = tracing_subscriber::registry().with(log_layer);
    match tracer_opt {
        Some(tracer) => Box::new(
            registry.with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(Targets::new().with_target(SPAN_TARGET, LevelFilter::TRACE)),
            ),
        ),
        None => Box::new(registry),
    }
}

fn build_tracer_provider(service_name: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|error| error.to_string())?;
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) wins.
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
            .is_ok_and(|attributes| attributes.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(service_name.to_string());
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::VERSION,
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Whether to export traces, decided from the `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TraceExport {
    enabled: bool,
    /// Where spans go, for the log line.
    endpoint: String,
    /// A setting that is not honoured as asked.
    warning: Option<String>,
}

fn trace_export(env: impl Fn(&str) -> Option<String>) -> TraceExport {
    let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .unwrap_or_else(|| "http://localhost:4317".to_string());
    let off = |warning: Option<String>| TraceExport {
        enabled: false,
        endpoint: endpoint.clone(),
        warning,
    };
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return off(None);
    }
    let mut warning = None;
    let enabled = match set("OTEL_TRACES_EXPORTER") {
        Some(exporters) => {
            let names: Vec<String> = exporters
                .split(',')
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect();
            let unsupported: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|name| *name != "otlp" && *name != "none")
                .collect();
            if !unsupported.is_empty() {
                warning = Some(format!(
                    "OTEL_TRACES_EXPORTER names exporters kmirror does not have ({}); only otlp is built in",
                    unsupported.join(",")
                ));
            }
            names.iter().any(|name| name == "otlp")
        }
        None => {
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        }
    };
    if !enabled {
        return off(warning);
    }
    let protocol =
        set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(protocol) = protocol.filter(|protocol| protocol.trim() != "grpc") {
        warning = Some(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not built in; exporting over grpc"
        ));
    }
    TraceExport {
        enabled: true,
        endpoint,
        warning,
    }
}

/// Names of the W3C trace context fields, as they travel in gRPC metadata.
pub const TRACE_CONTEXT_FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// W3C trace context (`traceparent`, `tracestate`) of `span`, to send along with
/// the work it covers. Empty (no allocation) when the span is not recorded.
pub fn trace_context(span: &Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    if span.is_disabled() {
        return carrier;
    }
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier
}

/// Hands the W3C trace context fields of `span` to `set` (a gRPC metadata map,
/// say), by their names in [`TRACE_CONTEXT_FIELDS`]. Does nothing when the span
/// is not recorded.
pub fn inject_trace_context(span: &Span, mut set: impl FnMut(&'static str, &str)) {
    if span.is_disabled() {
        return;
    }
    let carrier = trace_context(span);
    for name in TRACE_CONTEXT_FIELDS {
        if let Some(value) = carrier.get(name) {
            set(name, value);
        }
    }
}

/// Puts the W3C context of `span` (`traceparent`, `tracestate`) in gRPC
/// metadata: a stream's request (fetcher) or its response headers (writer).
/// Nothing when traces are off.
pub fn inject_metadata_context(span: &Span, metadata: &mut MetadataMap) {
    inject_trace_context(span, |name, value| {
        if let Ok(value) = value.parse() {
            metadata.insert(name, value);
        }
    });
}

/// The W3C trace context fields the other end put in gRPC metadata (see
/// [`inject_metadata_context`]).
pub fn metadata_trace_context(metadata: &MetadataMap) -> HashMap<String, String> {
    read_trace_context(|name| {
        metadata
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    })
}

/// The W3C trace context fields `get` finds by name (in gRPC metadata, say), as
/// a carrier for [`set_remote_parent`] or [`link_remote`].
pub fn read_trace_context(get: impl Fn(&'static str) -> Option<String>) -> HashMap<String, String> {
    TRACE_CONTEXT_FIELDS
        .into_iter()
        .filter_map(|name| get(name).map(|value| (name.to_string(), value)))
        .collect()
}

/// Makes `span` a child of the span whose W3C trace context `carrier` holds (the
/// sender's). Must be called before the span is entered or its context read.
/// Returns whether `carrier` named a valid parent (and the span is recorded).
pub fn set_remote_parent(span: &Span, carrier: &HashMap<String, String>) -> bool {
    if span.is_disabled() || carrier.is_empty() {
        return false;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// Makes `span` a child of `parent`, a span of this process. Must be called
/// before `span` is entered or its context read.
pub fn set_parent_span(span: &Span, parent: &Span) {
    if span.is_disabled() || parent.is_disabled() {
        return;
    }
    let _ = span.set_parent(parent.context());
}

/// Links `span` to the span whose W3C trace context `carrier` holds (a peer's
/// span that is neither its parent nor its child). Returns whether it did.
pub fn link_remote(span: &Span, carrier: &HashMap<String, String>) -> bool {
    if span.is_disabled() || carrier.is_empty() {
        return false;
    }
    let context = TraceContextPropagator::new().extract(carrier);
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return false;
    }
    span.add_link(span_context);
    true
}

/// Links `span` to the trace a W3C `traceparent` value names (a record header,
/// say). Returns whether the value was a valid trace parent.
pub fn link_traceparent(span: &Span, traceparent: &[u8]) -> bool {
    let Ok(traceparent) = std::str::from_utf8(traceparent) else {
        return false;
    };
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return false;
    }
    span.add_link(span_context);
    true
}

/// Marks `span` as failed, with `description` as the status message.
pub fn set_error(span: &Span, kind: &str, description: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("error.type", kind.to_string());
    span.set_status(opentelemetry::trace::Status::error(description.to_string()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(pairs: &[(&str, &str)]) -> TraceExport {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        trace_export(|name| env.get(name).cloned())
    }

    #[test]
    fn traces_are_off_unless_an_otel_variable_asks_for_them() {
        assert!(!decide(&[]).enabled);
        assert!(!decide(&[("OTEL_SERVICE_NAME", "x")]).enabled);
        assert!(!decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).enabled);
        let on = decide(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert!(on.enabled);
        assert_eq!(on.endpoint, "http://collector:4317");
        assert!(decide(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]).enabled);
        let default_endpoint = decide(&[("OTEL_TRACES_EXPORTER", "otlp")]);
        assert!(default_endpoint.enabled);
        assert_eq!(default_endpoint.endpoint, "http://localhost:4317");
    }

    #[test]
    fn sdk_disabled_and_the_none_exporter_win() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
        assert!(!decide(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).enabled);
        assert!(!decide(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).enabled);
        assert!(decide(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).enabled);
        assert!(!decide(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).enabled);
    }

    #[test]
    fn unsupported_exporters_and_protocols_are_named() {
        let zipkin = decide(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert!(!zipkin.enabled);
        assert!(zipkin.warning.unwrap().contains("zipkin"));
        let both = decide(&[("OTEL_TRACES_EXPORTER", "otlp,console")]);
        assert!(both.enabled);
        assert!(both.warning.unwrap().contains("console"));
        let http = decide(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert!(http.enabled);
        assert!(http.warning.unwrap().contains("http/protobuf"));
        let grpc = decide(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!(grpc.warning, None);
    }

    #[test]
    fn without_an_exporter_spans_carry_no_context_and_take_no_links() {
        let span = tracing::info_span!(target: SPAN_TARGET, "unrecorded");
        assert!(trace_context(&span).is_empty());
        assert!(!link_traceparent(&span, b"not a traceparent"));
        assert!(!set_remote_parent(&span, &HashMap::new()));
        set_error(&span, "kind", "description");
        let mut injected = Vec::new();
        inject_trace_context(&span, |name, value| {
            injected.push((name, value.to_string()))
        });
        assert!(injected.is_empty());
        let carrier = HashMap::from([(
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        )]);
        assert!(!link_remote(&span, &carrier));
        assert!(!set_remote_parent(&span, &carrier));
        set_parent_span(&span, &tracing::info_span!(target: SPAN_TARGET, "parent"));
    }

    #[test]
    fn a_context_sent_through_metadata_makes_the_receiving_span_its_child() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("test"))
                .with_filter(Targets::new().with_target(SPAN_TARGET, LevelFilter::TRACE)),
        );
        tracing::subscriber::with_default(subscriber, || {
            let sender = tracing::info_span!(target: SPAN_TARGET, "sender");
            let mut metadata = HashMap::new();
            inject_trace_context(&sender, |name, value| {
                metadata.insert(name, value.to_string());
            });
            assert!(metadata.contains_key("traceparent"));
            let carrier = read_trace_context(|name| metadata.get(name).cloned());

            let receiver = tracing::info_span!(target: SPAN_TARGET, parent: None, "receiver");
            assert!(set_remote_parent(&receiver, &carrier));
            let sender_context = sender.context().span().span_context().clone();
            let receiver_context = receiver.context().span().span_context().clone();
            assert_eq!(receiver_context.trace_id(), sender_context.trace_id());
            assert_ne!(receiver_context.span_id(), sender_context.span_id());

            let local_child = tracing::info_span!(target: SPAN_TARGET, parent: None, "child");
            set_parent_span(&local_child, &receiver);
            assert_eq!(
                local_child.context().span().span_context().trace_id(),
                sender_context.trace_id()
            );
            let unrelated = tracing::info_span!(target: SPAN_TARGET, parent: None, "unrelated");
            assert!(link_remote(&unrelated, &carrier));
            assert!(!link_remote(&unrelated, &HashMap::new()));
        });
    }

    #[test]
    fn trace_context_fields_are_read_by_their_w3c_names() {
        let metadata = HashMap::from([
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("other", "ignored"),
        ]);
        let carrier = read_trace_context(|name| metadata.get(name).map(|value| value.to_string()));
        assert_eq!(carrier.len(), 1);
        assert_eq!(carrier["traceparent"], metadata["traceparent"]);
        assert!(read_trace_context(|_| None).is_empty());
    }
}
