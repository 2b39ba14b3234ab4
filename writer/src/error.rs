//! The writer's error type.

use kmirror_common::{ClusterName, FlowName};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Etcd(#[from] kmirror_common::etcd::EtcdError),
    #[error("etcd request failed: {0}")]
    EtcdRequest(#[from] etcd_client::Error),
    #[error(transparent)]
    Decode(#[from] kmirror_common::schema::DecodeError),
    #[error("flow {0} does not exist")]
    UnknownFlow(FlowName),
    #[error("cluster {0} does not exist")]
    UnknownCluster(ClusterName),
    #[error("cannot create a producer for cluster {cluster}: {source}")]
    Producer {
        cluster: ClusterName,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Start(#[from] kmirror_common::service::StartError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] kmirror_proto::tonic::transport::Error),
    #[error("the member's etcd lease was lost")]
    LeaseLost,
}
