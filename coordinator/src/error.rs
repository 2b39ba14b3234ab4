//! The coordinator's one error type, and its mapping to gRPC status codes (the only
//! place that mapping happens).

use kmirror_common::etcd::EtcdError;
use kmirror_common::types::InvalidName;
use kmirror_proto::tonic::{Code, Status};

use crate::topic_filter::TopicFilterError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The request is malformed (a name, a regex, a property).
    #[error("{0}")]
    InvalidArgument(String),

    #[error("{what} {name} not found")]
    NotFound { what: &'static str, name: String },

    #[error("{what} {name} already exists")]
    AlreadyExists { what: &'static str, name: String },

    /// The request is well formed but would break a guard rail (two flows writing
    /// one destination topic, the last live member drained, a cluster in use
    /// deleted, ...). The message names the conflict; nothing was changed.
    #[error("{0}")]
    Refused(String),

    #[error("cannot reach cluster {cluster} at {bootstrap}: {cause}")]
    ClusterUnreachable {
        cluster: String,
        bootstrap: String,
        cause: String,
    },

    /// A Kafka request other than reaching the cluster failed.
    #[error("kafka cluster {cluster}: {action} failed: {cause}")]
    Kafka {
        cluster: String,
        action: String,
        cause: String,
    },

    #[error(transparent)]
    Etcd(#[from] EtcdError),

    /// A fenced write found that this coordinator no longer holds the leadership.
    #[error("leadership lost: a fenced etcd write found another leader")]
    Deposed,

    /// A flow's partitions did not all stop within the time given.
    #[error("flow {flow}: {pending} partitions have not stopped after {waited_secs} s (is a coordinator leading? see `kmirrorctl status`); the call can be repeated")]
    StopTimedOut {
        flow: String,
        pending: usize,
        waited_secs: u64,
    },

    /// A cluster secret cannot be sealed or opened (no secrets key, another
    /// key, a tampered value); the message names the cluster and the property.
    #[error(transparent)]
    Secrets(#[from] kmirror_common::secrets::SecretsError),

    /// The gRPC server could not start or failed.
    #[error("grpc server on {address}: {cause}")]
    Server { address: String, cause: String },

    /// No usable transport settings (TLS files, or `--insecure`).
    #[error(transparent)]
    Transport(#[from] kmirror_common::tls::TransportError),
}

impl From<etcd_client::Error> for CoordinatorError {
    fn from(error: etcd_client::Error) -> Self {
        CoordinatorError::Etcd(EtcdError::Request(error))
    }
}

impl From<InvalidName> for CoordinatorError {
    fn from(error: InvalidName) -> Self {
        CoordinatorError::InvalidArgument(error.to_string())
    }
}

impl From<TopicFilterError> for CoordinatorError {
    fn from(error: TopicFilterError) -> Self {
        CoordinatorError::InvalidArgument(error.to_string())
    }
}

impl From<CoordinatorError> for Status {
    fn from(error: CoordinatorError) -> Self {
        let code = match &error {
            CoordinatorError::InvalidArgument(_) => Code::InvalidArgument,
            CoordinatorError::NotFound { .. } => Code::NotFound,
            CoordinatorError::AlreadyExists { .. } => Code::AlreadyExists,
            CoordinatorError::Refused(_) => Code::FailedPrecondition,
            CoordinatorError::ClusterUnreachable { .. } => Code::Unavailable,
            CoordinatorError::Kafka { .. } => Code::Unavailable,
            CoordinatorError::Etcd(EtcdError::Decode(_)) => Code::Internal,
            CoordinatorError::Etcd(_) => Code::Unavailable,
            CoordinatorError::Deposed => Code::Unavailable,
            CoordinatorError::StopTimedOut { .. } => Code::DeadlineExceeded,
            CoordinatorError::Server { .. } => Code::Internal,
            CoordinatorError::Secrets(_) => Code::FailedPrecondition,
            CoordinatorError::Transport(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_status_code_a_client_can_act_on() {
        let status: Status = CoordinatorError::AlreadyExists {
            what: "flow",
            name: "dr".to_string(),
        }
        .into();
        assert_eq!(status.code(), Code::AlreadyExists);
        assert_eq!(status.message(), "flow dr already exists");

        let status: Status = CoordinatorError::ClusterUnreachable {
            cluster: "src".to_string(),
            bootstrap: "127.0.0.1:1".to_string(),
            cause: "timed out".to_string(),
        }
        .into();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "cannot reach cluster src at 127.0.0.1:1: timed out"
        );
    }
}
