//! How a failed call is told: what was attempted and why, with gRPC and transport
//! errors turned into causes an operator can act on.

use kmirror_proto::tonic::{Code, Status};

/// A failed operation: what was attempted and why it failed, printed as
/// `error: <what>: <cause>`.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub cause: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "error: {}: {}", self.what, self.cause)
    }
}

/// A cause in words for a status the coordinator returned (or the transport made up).
pub(super) fn status_cause(status: &Status, coordinator: &str) -> String {
    let message = status.message().trim();
    match status.code() {
        Code::Unavailable if is_transport_failure(status) => {
            format!("cannot reach the coordinator at {coordinator}: {}", transport_cause(status))
        }
        Code::DeadlineExceeded => format!("the coordinator at {coordinator} did not answer in time"),
        Code::Unimplemented => format!(
            "the coordinator at {coordinator} does not serve this request (is it a kmirror coordinator of this version?)"
        ),
        Code::Internal | Code::Unknown if message.is_empty() => {
            format!("internal error in the coordinator ({})", status.code().description())
        }
        _ if message.is_empty() => status.code().description().to_string(),
        _ => message.to_string(),
    }
}

/// Whether an Unavailable status comes from the connection rather than from the
/// coordinator (which also answers Unavailable when a Kafka cluster cannot be
/// reached). Only statuses made up by the client side carry the transport error.
pub(super) fn is_transport_failure(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

pub(super) fn transport_cause(status: &Status) -> String {
    let mut causes = Vec::new();
    let mut source_opt = std::error::Error::source(status);
    while let Some(source) = source_opt {
        causes.push(source.to_string());
        source_opt = source.source();
    }
    causes.dedup();
    causes
        .last()
        .cloned()
        .unwrap_or_else(|| status.message().to_string())
}

pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut causes = vec![error.to_string()];
    let mut source_opt = error.source();
    while let Some(source) = source_opt {
        causes.push(source.to_string());
        source_opt = source.source();
    }
    causes.dedup();
    causes.join(": ")
}

/// The innermost cause of a connection failure ("Connection refused", "dns error").
pub(super) fn transport_error_cause(error: &kmirror_proto::tonic::transport::Error) -> String {
    let mut innermost = error.to_string();
    let mut source_opt = std::error::Error::source(error);
    while let Some(source) = source_opt {
        innermost = source.to_string();
        source_opt = source.source();
    }
    innermost
}
