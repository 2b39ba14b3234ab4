//! Logging and tracing set-up shared by every binary.

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: human-readable lines on stderr, filtered by
/// `RUST_LOG` (default `info`).
pub fn init(service_name: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,h2=warn,tower=warn,hyper=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    tracing::debug!(service = service_name, "telemetry initialised");
}
