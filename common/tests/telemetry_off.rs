//! With traces off, kmirror's spans are never built: the span macros on the data
//! path return a disabled span, so nothing per batch (or per record) is spent on
//! them. Its own test binary: a subscriber installed by another test on another
//! thread would take part in deciding which call sites are enabled.

use kmirror_common::telemetry::{subscriber, SPAN_TARGET};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_subscriber::EnvFilter;

fn batch_span() -> Span {
    tracing::info_span!(target: SPAN_TARGET, "send", "kmirror.batch.seq" = 1)
}

#[test]
fn spans_are_built_only_for_a_tracer() {
    let logs_only = subscriber(EnvFilter::new("info"), None);
    tracing::subscriber::with_default(logs_only, || {
        assert!(
            batch_span().is_disabled(),
            "a span was built with traces off"
        );
        assert!(tracing::enabled!(tracing::Level::INFO), "logs still flow");
    });

    let provider = SdkTracerProvider::builder().build();
    let exporting = subscriber(EnvFilter::new("info"), Some(provider.tracer("test")));
    tracing::subscriber::with_default(exporting, || {
        assert!(!batch_span().is_disabled(), "no span for the tracer");
    });
}
